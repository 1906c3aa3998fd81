"""Assemble and build the jupyter-book (1.x) over the executed notebooks, offline and warning-free (-W), then check it.

    python -m replib.book --notebooks build/notebooks --out build/book
The sources (book/_config.yml, intro.md and the course pages: instructor's guide, notation, glossary, notes for
researchers) are copied next to the executed notebooks; the guide's table of lesson times is written from
`notebooks/measured_times.json` (`replib.course`). The table of contents lists the notebooks in their numbered order,
then the course pages and, last, an execution-statistics page written from `timings.json` (wall time,
machine, date and versions of each notebook's last run, as in the QuantEcon lectures). The HTML lands in
OUT/_build/html, and the build fails unless every notebook has its page with all its figures, no page shows a
traceback, and no page needs a script from the network (MathJax is shipped with the book by `sphinx-mathjax-offline`).
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

from . import course

ROOT = Path(__file__).resolve().parents[1]
STATS_PAGE = "execution_statistics"
COURSE_PAGES = ("instructor", "notation", "glossary", "researchers")  # book/NAME.md, after the lessons
TIMES_MARKER = "<!-- measured times -->"


def expected_notebooks() -> list[str]:
    """The file names of the kit's notebooks (notebooks/NN_*.ipynb): each must be executed before the book is built."""
    return sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def assemble(notebooks: Path, out: Path, expected: list[str] | None = None,
             pages: tuple[str, ...] = COURSE_PAGES) -> list[str]:
    """Copy the book sources and the executed notebooks into `out`, write the statistics page and the toc.

    `expected` names the notebooks that must be there (default: all of notebooks/; the tests pass their own), `pages`
    the course pages (they link the kit's lessons, so a book of other notebooks leaves them out).
    """
    executed = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    expected = expected_notebooks() if expected is None else expected
    missing = sorted(set(expected) - {p.name for p in executed})
    if missing:
        raise SystemExit(f"executed notebooks missing in {notebooks}: {missing}; run `make notebooks` first")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("_config.yml", "intro.md", *(f"{page}.md" for page in pages)):
        shutil.copy(ROOT / "book" / name, out / name)
    guide = out / "instructor.md"  # the times come from the measured log, never typed
    if guide.exists():
        from .exercises import exercise_table

        guide.write_text(guide.read_text().replace(TIMES_MARKER, course.times_table())
                         .replace(EXERCISES_MARKER, exercise_table()))
    from .exercises import student_notebook

    for nb in executed:
        source = ROOT / "notebooks" / nb.name
        student_notebook(source if source.exists() else nb, out / STUDENT_DIR / nb.name)
        book_page = with_student_link(exercise_boxes(nbformat.read(str(nb), as_version=4)), nb.name)
        nbformat.write(book_page, str(out / nb.name))
    log = notebooks / "timings.json"
    timings = json.loads(log.read_text()) if log.exists() else {}
    (out / f"{STATS_PAGE}.md").write_text(statistics_page(timings, [nb.stem for nb in executed]))
    (out / "_toc.yml").write_text(toc([nb.stem for nb in executed], pages))
    return [nb.stem for nb in executed]


EXERCISES_MARKER = "<!-- exercises -->"  # replaced by `exercises.exercise_table()` in the instructor's guide
STUDENT_DIR = "student"  # the student versions inside the book's sources; only_build_toc_files keeps them off the toc


def with_student_link(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The page with a download link to its student notebook (`STUDENT_DIR`/`name`) below its title cell."""
    link = nbformat.v4.new_markdown_cell(
        f"{{download}}`Download the student version of this notebook <{STUDENT_DIR}/{name}>` (each exercise's "
        "solution replaced by a stub: run it, do the exercises, rerun each check until it passes).")
    nb = nbformat.from_dict(nb)
    nb.cells.insert(1 if nb.cells else 0, link)
    return nb


_SHOW = re.compile(r"""^\s*exercises\.show\(\s*["'](\d\d\.\d+)["']\s*\)\s*$""")


def _label(id: str) -> str:
    return "ex-" + id.replace(".", "-")


def exercise_boxes(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The book's version of a lesson: each `exercises.show("NN.M")` cell becomes a numbered exercise box
    (sphinx-exercise's gated directives) holding the prompt, then a collapsed hint, and the cell with the exercise's
    solution region (its check included, so its output shows the check passing) goes into a collapsed solution."""
    from . import exercises

    cells, md = [], nbformat.v4.new_markdown_cell
    solutions = {ids[0]: cell for cell in nb.cells if cell.cell_type == "code"
                 for ids in [exercises.stub_solutions(cell.source)[1]] if ids}
    for cell in nb.cells:
        shown = _SHOW.match(cell.source) if cell.cell_type == "code" else None
        if shown:
            ex = exercises.EXERCISES[shown.group(1)]
            cells += [md(f"```{{exercise-start}} {ex.id} · {ex.title}\n:label: {_label(ex.id)}\n:nonumber:\n```"),
                      md(ex.prompt),
                      md("```{exercise-end}\n```"),
                      md(f":::{{admonition}} Hint\n:class: dropdown\n{ex.hint}\n:::")]
            if ex.id in solutions:
                solution = nbformat.from_dict(solutions[ex.id])  # the nbgrader markers are for the student version
                solution.source = "\n".join(line for line in solution.source.splitlines()
                                            if line.strip() not in (exercises.BEGIN, exercises.END))
                cells += [md(f"```{{solution-start}} {_label(ex.id)}\n:class: dropdown\n```"), solution,
                          md("```{solution-end}\n```")]
        elif not any(cell is s for s in solutions.values()):
            cells.append(cell)
    nb = nbformat.from_dict(nb)
    nb.cells = cells
    return nb


def toc(lessons: list[str], pages: tuple[str, ...] = COURSE_PAGES) -> str:
    """The table of contents: the lessons in order, then the pages for instructors and researchers."""
    def part(caption: str, files: list[str]) -> str:
        return f"  - caption: {caption}\n    chapters:\n" + "".join(f"      - file: {f}\n" for f in files)
    return ("format: jb-book\nroot: intro\nparts:\n" + part("Lessons", lessons)
            + part("Course", [*pages, STATS_PAGE]))


# ---- the execution-statistics page -------------------------------------------------------------------------------

def wall_time(seconds: float) -> str:
    """42.1 s, 3 min 05 s, 1 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _run_kind(entry: dict[str, Any]) -> str:
    """What produced the page: a full run, a full run with -p overrides, or only a quick run."""
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(entry.get("overrides", {}).items())).replace("|", "\\|")
    kind = "full" if entry.get("profile") == "full" else f"**{entry.get('profile', '?')} run only** (no full run)"
    return f"{kind}, with {overrides}" if overrides else kind


def statistics_page(timings: dict[str, dict[str, Any]], names: list[str]) -> str:
    """A MyST page: one row per notebook (wall time of its last run, run kind, date, machine), then one column per
    distinct machine and package versions, since notebooks may have run at different times on different machines."""
    setups: list[dict[str, Any]] = []  # distinct {machine, versions}, in order of first use; labelled A, B, ...
    rows = []
    for name in names:
        entry = timings.get(name)
        if entry is None:
            rows.append(f"| [{name}]({name}.ipynb) | no timing recorded | — | — | — | — |")
            continue
        label = "—"
        if "machine" in entry:
            setup = {"machine": entry["machine"], "versions": entry.get("versions", {})}
            if setup not in setups:
                setups.append(setup)
            label = chr(ord("A") + setups.index(setup))
        finished = entry.get("finished", "not recorded").replace("T", " ")
        rows.append(f"| [{name}]({name}.ipynb) | {wall_time(entry['seconds'])} | {_run_kind(entry)} | "
                    f"{entry.get('torch_threads', '—')} | {finished} | {label} |")
    lines = [
        "# Execution statistics", "",
        "The wall time of the run that produced each page of this book, as `replib.execute` recorded it in "
        "`timings.json` (papermill, one notebook at a time, checkpoint cache included: a notebook that loaded its "
        "trained models instead of training them is faster). The pages are meant to come from the **full** profile; "
        "a quick run (the small values CI runs) says nothing about how long a full run takes.", "",
        "| Notebook | Wall time | Run | Torch threads | Finished | Machine |",
        "|---|---|---|---|---|---|", *rows, "",
        f"Book built {datetime.datetime.now().astimezone().isoformat(timespec='seconds').replace('T', ' ')}.", "",
        "## Machines and versions", "",
    ]
    if not setups:
        lines.append("No machine or versions were recorded (timings written by an older `replib.execute`).")
        return "\n".join(lines) + "\n"
    machines = [s["machine"] for s in setups]
    versions = [s["versions"] for s in setups]
    labels = [chr(ord("A") + i) for i in range(len(setups))]
    lines += ["| | " + " | ".join(labels) + " |", "|---" * (len(setups) + 1) + "|"]
    for key, title in (("cpu", "CPU"), ("logical_cpus", "logical CPUs"), ("gpu", "GPU"), ("platform", "platform")):
        lines.append(f"| {title} | " + " | ".join(str(m.get(key, "—")) for m in machines) + " |")
    packages = list(dict.fromkeys(k for v in versions for k in v))
    for package in packages:
        lines.append(f"| {package} | " + " | ".join(v.get(package, "—") for v in versions) + " |")
    return "\n".join(lines) + "\n"


# ---- checks on the built HTML ------------------------------------------------------------------------------------

# what myst-nb shows for an output in HTML, highest priority first (myst_nb.core.render.base_render_priority)
_HTML_PRIORITY = ("application/vnd.jupyter.widget-view+json", "application/javascript", "text/html", "image/svg+xml",
                  "image/png", "image/gif", "image/jpeg", "text/markdown", "text/latex", "text/plain")
_SCRIPT_SRC = re.compile(r"""<script\b[^>]*?(?<![\w-])src\s*=\s*["']([^"']+)["']""", re.I)
_IMG_SRC = re.compile(r"""<img\b[^>]*?(?<![\w-])src\s*=\s*["']([^"']+)["']""", re.I)
_REMOTE = re.compile(r"^(https?:)?//", re.I)


def image_outputs(nb: nbformat.NotebookNode) -> int:
    """How many figures the page of this executed notebook must show: outputs that myst-nb renders as an image."""
    count = 0
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type != "code" or "remove-output" in tags or "remove-cell" in tags:
            continue
        for output in cell.get("outputs", []):
            shown = next((m for m in _HTML_PRIORITY if m in output.get("data", {})), "")
            count += shown.startswith("image/")
    return count


def _local(page: Path, src: str) -> Path:
    """The file a relative link of `page` points to (without ?query or #anchor)."""
    return page.parent / src.split("?")[0].split("#")[0]


def exercise_problems(page: Path, text: str, nb: nbformat.NotebookNode) -> list[str]:
    """Every exercise box of the book's notebook (`exercise_boxes`) must be on the page, its solution collapsed below."""
    problems = []
    for cell in nb.cells:
        boxed = re.search(r"\{exercise-start\}.*\n:label: (ex-(\d\d)-(\d+))", cell.source) \
            if cell.cell_type == "markdown" else None
        if not boxed:
            continue
        label, id = boxed.group(1), f"{boxed.group(2)}.{boxed.group(3)}"
        if not re.search(rf'class="[^"]*\bexercise\b[^"]*"[^>]*id="{label}"|id="{label}"[^>]*class="[^"]*\bexercise\b',
                         text):
            problems.append(f"{page.name}: exercise {id} has no exercise box")
        if not re.search(rf'<div[^>]*class="[^"]*\bsolution\b[^"]*\bdropdown\b[^"]*"[^>]*>(?:(?!</div>).)*'
                         rf'href="#{label}"', text, re.S):
            problems.append(f"{page.name}: exercise {id} has no collapsed solution")
    return problems


def check_html(html: Path, notebooks: list[Path], pages: tuple[str, ...] = COURSE_PAGES) -> list[str]:
    """What is wrong with the built book, one message per problem naming the page; empty when all is well."""
    problems = []
    for nb in notebooks:
        page = html / f"{nb.stem}.html"
        if not page.exists():
            problems.append(f"{nb.name}: no page {page.name} in the book")
            continue
        text = page.read_text(errors="replace")
        problems += exercise_problems(page, text, nbformat.read(str(nb), as_version=4))
        links = re.findall(rf'href="([^"]*_downloads/[^"]*/{re.escape(nb.name)})"', text)
        if not links:
            problems.append(f"{page.name}: no download link to its student notebook")
        problems += [f"{page.name}: links {href}, which is not in the built book" for href in links
                     if not _local(page, href).exists()]
        images = _IMG_SRC.findall(text)
        want = image_outputs(nbformat.read(nb, as_version=4))
        if len(images) < want:
            problems.append(f"{page.name}: {len(images)} images, but the executed notebook has {want} figure outputs")
        for src in images:
            if not src.startswith("data:") and not _REMOTE.match(src) and not _local(page, src).exists():
                problems.append(f"{page.name}: shows {src}, which is not in the built book")
    for name in (*pages, STATS_PAGE):
        if not (html / f"{name}.html").exists():
            problems.append(f"no page {name}.html in the book")
    for page in sorted(p for p in html.rglob("*.html") if "_static" not in p.relative_to(html).parts):
        text, name = page.read_text(errors="replace"), page.relative_to(html)
        if "Traceback (most recent call last)" in text or 'class="output traceback' in text:
            problems.append(f"{name}: shows a Python traceback (an error output or a traceback printed by a cell)")
        for src in _SCRIPT_SRC.findall(text):
            if _REMOTE.match(src):
                problems.append(f"{name}: loads a remote script {src} (the book must read offline)")
            elif not _local(page, src).exists():
                problems.append(f"{name}: loads {src}, which is not in the built book")
        if 'class="math' in text and not any("mathjax" in s.lower() and not _REMOTE.match(s)
                                            for s in _SCRIPT_SRC.findall(text)):
            problems.append(f"{name}: has equations but loads no local MathJax")
    return problems


def build(notebooks: Path, out: Path, expected: list[str] | None = None,
          pages: tuple[str, ...] = COURSE_PAGES) -> Path:
    """Assemble, build the HTML (warnings are errors) and check it; exit with the list of problems if any."""
    names = assemble(notebooks, out, expected, pages)
    jb = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jb), "build", str(out), "--builder", "html", "-W", "-n", "--keep-going"], check=True)
    html = out / "_build" / "html"
    problems = check_html(html, [out / f"{name}.ipynb" for name in names], pages)
    if problems:
        raise SystemExit("the built book has problems:\n  " + "\n  ".join(problems))
    print(f"book: {html / 'index.html'}")
    return html / "index.html"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebooks", type=Path, default=ROOT / "build" / "notebooks")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "book")
    args = ap.parse_args(argv)
    build(args.notebooks, args.out)


if __name__ == "__main__":
    main()
