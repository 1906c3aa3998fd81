"""The book builder on a tiny book of fabricated executed notebooks: the statistics page, offline MathJax, and the
checks that fail the build (a traceback on a page, a missing figure)."""
import base64
import io
import json
import re
import shutil
from html import unescape

import nbformat
import pytest
from PIL import Image

from replib import book, course, execute


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG = _png()


SOLUTION = """from replib import exercises
def spikiness(h):
    ### BEGIN SOLUTION
    return h.std(1, unbiased=False) / (h.mean(1) * (h.shape[1] - 1) ** 0.5)
    ### END SOLUTION
exercises.check("02.1", spikiness)"""


def _executed(path, title, error=False, exercise=False):
    """An executed notebook as papermill leaves one: title, an equation, a code cell with a figure output; with
    `exercise`, exercise 02.1's prompt cell and its solved, checked cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {title}\n\nThe loss is\n$$x^2$$"))
    figure = nbformat.v4.new_code_cell("plot()", execution_count=1)
    figure.outputs = [nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})]
    nb.cells.append(figure)
    if exercise:
        nb.cells.append(nbformat.v4.new_markdown_cell("## Exercises"))
        nb.cells.append(nbformat.v4.new_code_cell('exercises.show("02.1")', execution_count=2))
        solved = nbformat.v4.new_code_cell(SOLUTION, execution_count=3)
        solved.outputs = [nbformat.v4.new_output("stream", text="✓ Exercise 02.1 (spikiness): correct.\n")]
        nb.cells.append(solved)
    if error:
        cell = nbformat.v4.new_code_cell("1 / 0", execution_count=2)
        cell.outputs = [nbformat.v4.new_output(
            "error", ename="ZeroDivisionError", evalue="division by zero",
            traceback=["\x1b[0;31m---------\x1b[0m", "\x1b[0;31mZeroDivisionError\x1b[0m  Traceback (most recent call "
                       "last)", "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"])]
        nb.cells.append(cell)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real jupyter-book build of two notebooks: 01 timed by a full run, 02 only by a quick run."""
    tmp = tmp_path_factory.mktemp("book")
    src = tmp / "notebooks"
    src.mkdir()
    _executed(src / "01_alpha.ipynb", "01 · Alpha", exercise=True)
    _executed(src / "02_beta.ipynb", "02 · Beta")
    env = execute.environment()
    (src / "timings.json").write_text(json.dumps({
        "01_alpha": {"seconds": 754.2, "profile": "full", "overrides": {}, "finished": "2026-12-01T10:00:00+00:00",
                     "torch_threads": 2, **env},
        "02_beta": {"seconds": 8.3, "profile": "quick"},  # an entry from before machines were recorded
    }))
    # no course pages: they link the kit's real lessons, which this tiny book does not have
    index = book.build(src, tmp / "out", expected=["01_alpha.ipynb", "02_beta.ipynb"], pages=())
    return index.parent, env


def test_statistics_page_lists_notebooks_times_machine_and_versions(built):
    html, env = built
    page = (html / "execution_statistics.html").read_text()
    text = unescape(re.sub(r"<[^>]+>", " ", page))
    assert "01_alpha" in text and "12 min 34 s" in text and "2026-12-01 10:00:00" in text
    assert "02_beta" in text and "quick run only" in text and "8.3 s" in text
    for package in execute.VERSIONED:
        assert package in text and env["versions"][package] in text
    assert env["machine"]["cpu"] in text
    assert "execution_statistics.html" in (html / "02_beta.html").read_text()  # listed in the toc


def test_no_page_needs_the_network_and_mathjax_is_local(built):
    html, _ = built
    page = (html / "01_alpha.html").read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    mathjax = [s for s in scripts if "mathjax" in s.lower()]
    assert mathjax and all(s.startswith("_static/") for s in mathjax), scripts
    assert (html / mathjax[0]).is_file()
    for page in (p for p in html.rglob("*.html") if "_static" not in p.parts):
        assert not re.search(r'<script[^>]*src="(https?:)?//', page.read_text()), page
    assert book.check_html(html, [], pages=()) == []


def test_an_error_output_fails_the_build_naming_the_page(tmp_path):
    _executed(tmp_path / "01_broken.ipynb", "01 · Broken", error=True)
    with pytest.raises(SystemExit, match=r"01_broken\.html: shows a Python traceback"):
        book.build(tmp_path, tmp_path / "out", expected=["01_broken.ipynb"], pages=())


def test_a_missing_figure_is_caught(built, tmp_path):
    html, _ = built
    nb = nbformat.read(html.parents[1] / "01_alpha.ipynb", as_version=4)
    figure = next(c for c in nb.cells if c.cell_type == "code")
    figure.outputs.append(nbformat.v4.new_output("display_data", data={"image/svg+xml": "<svg/>"}))
    figure.outputs.append(nbformat.v4.new_output("display_data", data={"text/html": "<b>t</b>", "image/png": PNG}))
    nbformat.write(nb, str(tmp_path / "01_alpha.ipynb"))  # the page shows one image; this notebook has two figures
    assert book.check_html(html, [tmp_path / "01_alpha.ipynb"], pages=()) == [
        "01_alpha.html: 1 images, but the executed notebook has 2 figure outputs"]
    assert "no page 03_gamma.html" in book.check_html(html, [tmp_path / "03_gamma.ipynb"], pages=())[0]
    for image in (html / "_images").iterdir():  # the page links a figure that the build did not copy
        image.rename(tmp_path / image.name)
    try:
        problems = book.check_html(html, [html.parents[1] / "01_alpha.ipynb"], pages=())
        assert "01_alpha.html: shows _images/" in problems[0]
    finally:
        for image in tmp_path.glob("*.png"):
            image.rename(html / "_images" / image.name)


def test_assemble_requires_the_expected_notebooks(tmp_path):
    _executed(tmp_path / "01_alpha.ipynb", "01 · Alpha")
    with pytest.raises(SystemExit, match="02_beta"):
        book.assemble(tmp_path, tmp_path / "out", expected=["01_alpha.ipynb", "02_beta.ipynb"])
    with pytest.raises(SystemExit, match="01_memorization"):  # by default: every notebook of notebooks/
        book.assemble(tmp_path, tmp_path / "out")


def test_statistics_page_one_column_per_machine():
    machine = {"cpu": "Xeon", "logical_cpus": 2, "gpu": "none", "platform": "Linux"}
    versions = {"python": "3.11", "torch": "2.13.0"}
    timings = {
        "01_a": {"seconds": 30.0, "profile": "full", "overrides": {}, "machine": machine, "versions": versions},
        "02_b": {"seconds": 4000.0, "profile": "full", "overrides": {"MODE": "real"}, "finished": "2026-12-01T10:00",
                 "machine": {**machine, "gpu": "NVIDIA H200"}, "versions": versions},
        "03_c": {"seconds": 5.0, "profile": "full", "overrides": {}, "machine": dict(machine), "versions": versions},
    }
    page = book.statistics_page(timings, ["01_a", "02_b", "03_c", "04_d"])
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| [")}
    assert "30.0 s" in rows["[01_a](01_a.ipynb)"] and rows["[01_a](01_a.ipynb)"].endswith("| A |")
    assert "1 h 06 min" in rows["[02_b](02_b.ipynb)"] and "full, with MODE=real" in rows["[02_b](02_b.ipynb)"]
    assert rows["[02_b](02_b.ipynb)"].endswith("| B |") and rows["[03_c](03_c.ipynb)"].endswith("| A |")
    assert "no timing recorded" in rows["[04_d](04_d.ipynb)"]
    assert "| GPU | none | NVIDIA H200 |" in page and "| torch | 2.13.0 | 2.13.0 |" in page


def test_course_pages_follow_the_lessons_and_the_guide_shows_measured_times(tmp_path):
    _executed(tmp_path / "01_alpha.ipynb", "01 · Alpha")
    out = tmp_path / "out"
    book.assemble(tmp_path, out, expected=["01_alpha.ipynb"])
    toc = (out / "_toc.yml").read_text()
    assert toc.index("01_alpha") < toc.index("instructor") < toc.index("execution_statistics")
    for page in book.COURSE_PAGES:
        assert (out / f"{page}.md").exists() and f"file: {page}" in toc
    guide = (out / "instructor.md").read_text()
    assert book.TIMES_MARKER not in guide and course.times_table() in guide
    assert book.EXERCISES_MARKER not in guide and "| 05.1 | [05](05_unet_digits.ipynb) | Gu et al.'s copy rule |" in guide
    assert "| `05_unet_digits` |" in guide


def test_exercises_are_numbered_boxes_with_a_hint_and_a_collapsed_solution(built, tmp_path):
    html, _ = built
    page = html / "01_alpha.html"
    text = page.read_text()
    assert 'class="exercise admonition" id="ex-02-1"' in text and "02.1 · spikiness" in unescape(text)
    assert 'class="solution dropdown admonition"' in text and "Hint" in text
    assert "BEGIN SOLUTION" not in text and "✓ Exercise 02.1" in text  # the solution ran and its check passed
    book_nb = html.parents[1] / "01_alpha.ipynb"
    assert book.check_html(html, [book_nb], pages=()) == []
    broken = tmp_path / "html"
    shutil.copytree(html, broken)
    (broken / "01_alpha.html").write_text(text.replace('class="solution dropdown admonition"', 'class="solution"'))
    assert book.check_html(broken, [book_nb], pages=()) == ["01_alpha.html: exercise 02.1 has no collapsed solution"]


def test_every_page_links_its_student_notebook(built, tmp_path):
    """Each lesson page offers its student version as a download; the file it links is in the built book and has
    the solution stubbed. A page without the link, or with a link to a missing file, fails the check."""
    html, _ = built
    for name in ("01_alpha", "02_beta"):
        text = (html / f"{name}.html").read_text()
        href = re.search(rf'href="([^"]*_downloads/[^"]*/{name}\.ipynb)"', text).group(1)
        student = nbformat.read(str(html / href), as_version=4)
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    alpha = nbformat.read(str(html / re.search(r'href="([^"]*_downloads/[^"]*/01_alpha\.ipynb)"',
                                               (html / "01_alpha.html").read_text()).group(1)), as_version=4)
    assert 'raise NotImplementedError("Exercise 02.1: spikiness")' in alpha.cells[-1].source
    nbs = [html.parents[1] / "01_alpha.ipynb"]
    broken = tmp_path / "html"
    shutil.copytree(html, broken)
    text = (broken / "01_alpha.html").read_text()
    (broken / "01_alpha.html").write_text(text.replace("_downloads/", "_nowhere/"))
    assert book.check_html(broken, nbs, pages=()) == ["01_alpha.html: no download link to its student notebook"]
    href = re.search(r'href="([^"]*_downloads/[^"]*/01_alpha\.ipynb)"', text).group(1)
    (broken / href).unlink()
    (broken / "01_alpha.html").write_text(text)
    assert book.check_html(broken, nbs, pages=()) == [f"01_alpha.html: links {href}, which is not in the built book"]
