"""Assemble and build the jupyter-book (1.x) over the executed notebooks, offline and warning-free (-W).

    python -m replib.book --notebooks build/notebooks --out build/book
The sources (book/_config.yml, book/intro.md) are copied next to the executed notebooks; the table of contents lists
the notebooks in their numbered order. The HTML lands in OUT/_build/html.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def assemble(notebooks: Path, out: Path) -> list[str]:
    executed = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    expected = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = sorted(set(expected) - {p.name for p in executed})
    if missing:
        raise SystemExit(f"executed notebooks missing in {notebooks}: {missing}; run `make notebooks` first")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("_config.yml", "intro.md"):
        shutil.copy(ROOT / "book" / name, out / name)
    for nb in executed:
        shutil.copy(nb, out / nb.name)
    chapters = "\n".join(f"  - file: {nb.stem}" for nb in executed)
    (out / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nchapters:\n{chapters}\n")
    return [nb.stem for nb in executed]


def build(notebooks: Path, out: Path) -> Path:
    assemble(notebooks, out)
    jb = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jb), "build", str(out), "--builder", "html", "-W", "-n", "--keep-going"], check=True)
    html = out / "_build" / "html" / "index.html"
    print(f"book: {html}")
    return html


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebooks", type=Path, default=ROOT / "build" / "notebooks")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "book")
    args = ap.parse_args(argv)
    build(args.notebooks, args.out)


if __name__ == "__main__":
    main()
