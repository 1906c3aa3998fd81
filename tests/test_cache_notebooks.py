"""An instructor's pack, end to end: the checkpoints of the quick notebooks 01 and 05 packed, an empty cache, the pack
unpacked, and both notebooks executed again (papermill) with no training at all.

Training them costs about 4 minutes on one thread, so the test reuses the checkpoints `make test` has just trained
for the same notebooks: `REPLIB_CACHE` as the test session starts is the notebooks' cache, and tests/conftest.py runs
this module on notebook 05's worker, right after it (01 runs first, on the other worker, in a third of the time).
Those checkpoints seed the instructor's cache; when they are missing or incomplete (this module run alone, or
another cache), the first run after unpacking trains what is missing, and the test packs again from that run and
checks a second one. Measured on 2 cores: about 30 s with the seed (the two notebooks, loading), about 4.5 minutes
without."""
import json
import os
import shutil
from pathlib import Path

import pytest

from replib import cache as packs
from replib import execute

NOTEBOOKS = ["01", "05"]
NOTEBOOK_CACHE = os.environ.get("REPLIB_CACHE")  # read at collection, before conftest points it at a tmp folder


def outputs(folder: Path, prefix: str) -> str:
    """The printed output (streams and plain-text results) of the executed notebook `prefix` in `folder`."""
    nb = json.loads(next(folder.glob(f"{prefix}_*.ipynb")).read_text())
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            texts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(texts)


def seed(into: Path) -> list[str]:
    """Copy the notebooks' finished checkpoints of 01 and 05 from the notebooks' cache into `into`."""
    into.mkdir(parents=True, exist_ok=True)
    if not NOTEBOOK_CACHE or not Path(NOTEBOOK_CACHE).is_dir():
        return []
    found = [p for p in packs.finished_checkpoints(Path(NOTEBOOK_CACHE)) if p.name[:3] in ("01-", "05-")]
    for path in found:
        shutil.copy2(path, into / path.name)
    return [p.name for p in found]


@pytest.mark.slow
def test_unpacked_pack_runs_notebooks_01_and_05_without_training(tmp_path, monkeypatch):
    instructor = tmp_path / "instructor"
    seed(instructor)
    for attempt in (1, 2):
        archive = tmp_path / f"pack{attempt}.tar"
        packs.pack(archive, instructor)
        student = tmp_path / f"student{attempt}"  # empty until the pack is unpacked into it
        unpacked = packs.unpack(archive, student)
        monkeypatch.setenv("REPLIB_CACHE", str(student))  # the notebook kernels inherit it
        execute.run("quick", tmp_path / f"run{attempt}", NOTEBOOKS)
        printed = {nb: outputs(tmp_path / f"run{attempt}", nb) for nb in NOTEBOOKS}
        if attempt == 1 and any("trained and saved" in text for text in printed.values()):
            instructor = student  # the seed was incomplete: this run was the instructor's; pack it and run again
            continue
        break
    for nb, text in printed.items():
        assert "trained and saved" not in text and "recomputing" not in text, f"{nb} trained:\n{text[-2000:]}"
        loaded = {line.split()[2] for line in text.splitlines() if line.startswith("loaded checkpoint ")}
        assert loaded == {name for name in unpacked if name.startswith(nb)}, f"{nb} loaded {loaded}"
    assert set(unpacked) == {p.name for p in packs.finished_checkpoints(student)}, "the run added no checkpoint"
