"""Execute the kit's notebooks with papermill at a profile ("full": the defaults a learner runs; "quick": the small
values CI runs), into a build folder. Sources in notebooks/ are never written.

The quick profile lives next to the full one in each notebook's `parameters` cell, as a trailing comment:
    STEPS = 30_000  # quick: 8_000
so a reader sees both, and this module reads the same line.

    python -m replib.execute --profile full  --out build/notebooks          # the main job
    python -m replib.execute --profile quick --out build/quick --prepare-only --student-check  # nbval executes these
    python -m replib.execute 01 -p N_TRAIN 8                                  # one notebook, other values
"""
from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import re
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import nbformat

from .files import write_text_atomic
from .machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PROFILES = ("full", "quick")
_LINE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.+?)\s*#\s*quick:\s*(?P<quick>.+?)\s*$")
# the packages whose versions the book's execution-statistics page reports
VERSIONED = ("torch", "diffusers", "transformers", "papermill", "nbval")


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("notebook has no cell tagged 'parameters'")


def quick_parameters(path: Path) -> dict[str, Any]:
    """The quick values written as `# quick: VALUE` comments in the notebook's parameters cell."""
    cell = parameters_cell(nbformat.read(path, as_version=4))
    out = {}
    for line in cell.source.splitlines():
        m = _LINE.match(line.strip())
        if m:
            out[m["name"]] = ast.literal_eval(m["quick"])
    return out


def default_parameters(path: Path) -> dict[str, Any]:
    """The full-profile values of the notebook's parameters cell (plain assignments of literals)."""
    out = {}
    for node in ast.parse(parameters_cell(nbformat.read(path, as_version=4)).source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def notebook_parameters(prefix: str, profile: str = "full") -> dict[str, Any]:
    """The parameters notebook `prefix` (e.g. "06") runs with at `profile`: what another notebook reads to reuse its
    model without repeating its settings."""
    from .params import check_choice

    check_choice("profile", profile, PROFILES)
    path = find_notebooks([prefix])[0]
    params = default_parameters(path)
    return {**params, **quick_parameters(path)} if profile == "quick" else params


def _gpu() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # no torch, or a broken driver: report no GPU rather than fail the run
        pass
    return "none"


def environment() -> dict[str, Any]:
    """The machine and software a run happens on, recorded beside its timings for the book's statistics page."""
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {"machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "gpu": _gpu(),
                        "platform": platform.platform(terse=True)},
            "versions": {"python": platform.python_version(), **{name: version(name) for name in VERSIONED}}}


def torch_threads(params: dict[str, Any]) -> int:
    """The torch threads a notebook runs with: REPLIB_THREADS, else its THREADS parameter, else 1 (session.setup)."""
    return int(os.environ.get("REPLIB_THREADS") or params.get("THREADS") or 1)


def record_timings(out: Path, runs: dict[str, dict[str, Any]]) -> None:
    """Merge this run's entries into OUT/timings.json; notebooks not run now keep their earlier entries.

    One entry per notebook: seconds, profile, overrides (the -p values), finished (local ISO time), torch_threads,
    machine and versions. Entries written before machine and versions were recorded have only seconds and profile.
    """
    log = out / "timings.json"
    old = json.loads(log.read_text()) if log.exists() else {}
    old.update(runs)
    write_text_atomic(json.dumps(old, indent=1, default=str), log)  # the book reads it: never half-written


def find_notebooks(selection: list[str] | None = None) -> list[Path]:
    """notebooks/NN_*.ipynb in order, or those whose name starts with one of `selection` (e.g. "01")."""
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if selection:
        paths = [p for p in paths if any(p.name.startswith(s) or p.stem == s for s in selection)]
        if not paths:
            raise SystemExit(f"no notebook matches {selection}; choose from "
                             f"{[p.stem for p in sorted(NOTEBOOKS.glob('[0-9][0-9]_*.ipynb'))]}")
    return paths


def run(profile: str = "full", out: Path = ROOT / "build" / "notebooks", selection: list[str] | None = None,
        overrides: dict[str, Any] | None = None, prepare_only: bool = False, student_check: bool = False
        ) -> dict[str, float]:
    """Execute (or only parametrise) the selected notebooks into `out`; return wall seconds per notebook.
    `student_check` (with `prepare_only`): each exercise cell runs its student version, which must stop at its stub,
    then its solution (`exercises.student_check_notebook`), so a test run of a notebook also tests its student version.

    Each executed notebook is recorded in OUT/timings.json (`record_timings`), which the book's statistics page reads.
    """
    import papermill as pm

    if profile not in PROFILES:
        raise SystemExit(f"--profile {profile!r} is not allowed: choose one of {PROFILES}")
    out.mkdir(parents=True, exist_ok=True)
    # The kernels inherit this: with no front-end to draw them, the widget explorers plot once instead of waiting
    # for a slider (measured: notebook 07's explorer otherwise never returned under papermill).
    os.environ.setdefault("REPLIB_STATIC", "1")
    env = None if prepare_only else environment()
    times = {}
    for src in find_notebooks(selection):
        params = quick_parameters(src) if profile == "quick" else {}
        params.update(overrides or {})
        start = time.perf_counter()
        pm.execute_notebook(str(src), str(out / src.name), parameters=params, kernel_name="python3",
                            prepare_only=prepare_only, cwd=str(out), progress_bar=False)
        if student_check:
            from .exercises import student_check_notebook

            student_check_notebook(out / src.name)
        times[src.stem] = round(time.perf_counter() - start, 1)
        if not prepare_only:
            print(f"{src.name}: {times[src.stem]} s ({profile})", flush=True)
            # written after each notebook, so a run stopped later still keeps the times it measured
            record_timings(out, {src.stem: {
                "seconds": times[src.stem], "profile": profile, "overrides": dict(overrides or {}),
                "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "torch_threads": torch_threads({**default_parameters(src), **params}), **env}})
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="prefixes such as 01 02 (default: all)")
    ap.add_argument("--profile", default="full", choices=PROFILES)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "notebooks")
    ap.add_argument("--prepare-only", action="store_true", help="inject parameters without executing")
    ap.add_argument("--student-check", action="store_true",
                    help="with --prepare-only: exercise cells run their student version (which must stop at its stub), "
                         "then their solution")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override one parameter (VALUE is a Python literal)")
    args = ap.parse_args(argv)
    overrides = {}
    for name, value in args.parameter:
        try:
            overrides[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[name] = value
    if args.student_check and not args.prepare_only:
        ap.error("--student-check goes with --prepare-only (the notebooks it writes are for nbval)")
    run(args.profile, args.out, args.notebooks, overrides, args.prepare_only, args.student_check)


if __name__ == "__main__":
    sys.exit(main())
