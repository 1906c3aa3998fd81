"""The notebooks read as lessons (STYLE: "A notebook, top to bottom"): objectives and a measured time up front, learner
text with no account of how the kit was built or tested, no number in prose that the learner's run did not produce
(unless a paper is named for it), a prediction before the main result, one notation, and references that resolve.

Each check runs on the notebook sources (fast, no execution); each has a test that a bad cell fails it.
"""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from replib import course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# ---- the checks --------------------------------------------------------------------------------------------------

DEV_WORDS = re.compile(r"\b(smoke|bars?|CI|threads?|sessions?|nbval|papermill|pytest|an? earlier run|"
                       r"(?:tried|measured) (?:earlier|before)|one thread|two threads)\b", re.I)
HARMLESS_BAR = re.compile(r"\b(progress|error|colou?r|scale) bars?\b|\bbar (plot|chart|graph)s?\b|\bbars? of the plot\b",
                          re.I)
# measured-looking numbers: decimals, percentages, factors (1.4x). Versions (SD1.4, v1.4) and constants below are not.
NUMBER = re.compile(r"(?<![\w.$\\{^_-])(\d+\.\d+|\d+(?:\.\d+)?\s?%|\d+(?:\.\d+)?[x×](?![\w]))(?![\w.])")
CONSTANTS = {"1%", "0.5", "1.4"}   # the 1% FPR operating point, a half, Stable Diffusion v1.4
ATTRIBUTION = re.compile(r"arXiv|\bpaper\b|Table \d|Fig(?:ure|\.)? ?\d|et al\.|\(\d{4}\)|reports?|the authors", re.I)
SYMBOLS_RETIRED = {  # symbol: what the notation page uses instead (book/notation.md)
    r"(?<!\\bar)\\alpha\b|(?<![̄\\])α": "γ for the steering strength, κ for the TDF decay; ᾱ_t (\\bar\\alpha_t) only for the noise schedule",
    r"\$N\$": "n for the number of training samples",
}


def markdown_cells(path: Path) -> list[tuple[int, str]]:
    return [(i, "".join(c["source"])) for i, c in enumerate(json.loads(path.read_text())["cells"])
            if c["cell_type"] == "markdown"]


def parameter_comments(path: Path) -> str:
    cells = [c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", [])]
    text = "".join(cells[0]["source"]) if cells else ""
    return "\n".join(re.sub(r"#\s*quick:.*$", "", line).partition("#")[2] for line in text.splitlines())


def _without_code_and_math(text: str) -> str:
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    return re.sub(r"\$\$.*?\$\$|\$[^$]*\$", " ", text, flags=re.S)


def dev_words(text: str) -> list[str]:
    return [m.group(0) for m in DEV_WORDS.finditer(HARMLESS_BAR.sub(" ", _without_code_and_math(text)))]


def unrendered_numbers(text: str) -> list[str]:
    """Measured-looking numbers in a markdown cell whose sentence names no source (the learner's run renders its
    numbers in a code cell's output instead)."""
    found = []
    for sentence in re.split(r"(?<=[.!?:])\s+(?=[A-Z*(])|\n\s*[-*] |\n\n", _without_code_and_math(text)):
        if ATTRIBUTION.search(sentence):
            continue
        found += [m.group(1) for m in NUMBER.finditer(sentence) if m.group(1).replace(" ", "") not in CONSTANTS]
    return found


def header_problems(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    title = "".join(cells[0]["source"]) if cells and cells[0]["cell_type"] == "markdown" else ""
    problems = []
    if not title.startswith(f"# {path.stem[:2]} · "):
        problems.append(f"the first cell is not the title '# {path.stem[:2]} · …'")
    objectives = re.search(r"you will be able to\W*\n((?:\s*[-*] .+\n?)+)", title, re.I)
    count = len(re.findall(r"^\s*[-*] ", objectives.group(1), re.M)) if objectives else 0
    if not 3 <= count <= 5:
        problems.append(f"{count} learning objectives after 'you will be able to' (want 3-5 bullets)")
    for word in ("Prerequisites", "Needs"):
        if f"**{word}" not in title:
            problems.append(f"no **{word}** line in the title cell")
    code = "".join("".join(c["source"]) for c in cells[:4] if c["cell_type"] == "code")
    if f'show_time("{path.stem[:2]}")' not in code:
        problems.append(f'no course.show_time("{path.stem[:2]}") in the first code cells (the measured time)')
    return problems


def stale_names(text: str) -> list[str]:
    """`replib.…` names in the text that do not import."""
    bad = []
    for name in set(re.findall(r"\breplib(?:\.\w+)+", text)):
        parts = name.split(".")
        obj, i = None, len(parts)
        while i > 0:  # the longest importable module prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
                break
            except ImportError:
                i -= 1
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            obj = None
        if obj is None:
            bad.append(name)
    return bad


def section_numbers(path: Path) -> set[int]:
    return {int(m) for _, text in markdown_cells(path) for m in re.findall(r"^## (\d+) ·", text, re.M)}


def stale_sections(path: Path, text: str) -> list[str]:
    """'section N' (this notebook) and 'notebook MM section N' / 'MM's section N' references without that heading."""
    by_stem = {p.stem[:2]: p for p in NOTEBOOKS}
    bad = []
    for m in re.finditer(r"(?:(?:notebook\s+)?`?(\d\d)(?:_\w+)?`?(?:'s)?,?\s+)?[Ss]ections?\s+(\d+)(?:\s*[–-]\s*(\d+))?",
                         text):
        other, first, last = m.group(1), int(m.group(2)), int(m.group(3) or m.group(2))
        target = by_stem.get(other) if other else path
        if target is None:
            bad.append(m.group(0))
            continue
        have = section_numbers(target)
        bad += [m.group(0) for n in range(first, last + 1) if n not in have]
    return bad


# ---- the notebooks pass them ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_opens_with_objectives_prerequisites_needs_and_measured_time(path):
    assert header_problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_learner_text_has_no_development_history(path):
    hits = [f"cell {i}: {w!r}" for i, text in markdown_cells(path) for w in dev_words(text)]
    hits += [f"parameters cell comment: {w!r}" for w in dev_words(parameter_comments(path))]
    assert hits == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_numbers_in_prose_are_rendered_or_attributed(path):
    hits = [f"cell {i}: {n}" for i, text in markdown_cells(path) for n in unrendered_numbers(text)]
    assert hits == [], "render these from the run (IPython Markdown) or name the paper they come from"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_a_prediction_comes_before_the_main_result(path):
    assert any("**Predict" in text for _, text in markdown_cells(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_one_notation(path):
    hits = [f"cell {i}: {m.group(0)!r} (use {use})" for i, text in markdown_cells(path)
            for pattern, use in SYMBOLS_RETIRED.items() for m in re.finditer(pattern, text)]
    assert hits == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_references_resolve(path):
    hits = [f"cell {i}: {ref}" for i, text in markdown_cells(path)
            for ref in stale_names(text) + stale_sections(path, text)]
    assert hits == []


def test_every_notebook_has_a_measured_time():
    times = course.load_times()
    missing = [p.stem for p in NOTEBOOKS if p.stem not in times["cold"] and not p.stem.startswith("11")]
    assert missing == [], "run them timed and `python -m replib.course record`"


# ---- and the checks fail for cells that break them ------------------------------------------------------------------

def test_the_checks_catch_bad_cells(tmp_path):
    assert dev_words("The smoke profile's bars are what CI runs with one thread.") == ["smoke", "bars", "CI",
                                                                                        "one thread"]
    assert dev_words("A progress bar, a bar plot and error bars; `THREADS`.") == []
    assert unrendered_numbers("The detector reaches AUROC 0.94 and copies 85% of prompts, 1.4x faster.") == [
        "0.94", "85%", "1.4x"]
    assert unrendered_numbers("The paper reports AUROC 0.96 (arXiv 2512.20963, Table 2). At 1% FPR, SD1.4.") == []
    assert unrendered_numbers("Noise at $t = 10$ and `LR = 2e-3`; 16x16 glyphs; 5,000 digits.") == []
    assert stale_names("see `replib.probes.metrics.spikiness` and replib.text2image.train") == ["replib.text2image.train"]
    nb = tmp_path / "05_x.ipynb"
    nb.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# 05 · A title\nYou will be able to:\n- one\n- two\n"]},
        {"cell_type": "markdown", "metadata": {}, "source": ["## 1 · First\nas checked in section 2"]}]}))
    assert len(header_problems(nb)) == 4  # two objectives, no prerequisites, no needs, no measured time
    assert stale_sections(nb, "as checked in section 2") == ["section 2"]
    assert stale_sections(nb, "as in section 1") == []
