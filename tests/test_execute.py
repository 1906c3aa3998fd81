import ast
import json

import nbformat
import pytest

from replib import execute, widgets


def _notebook(path, parameters_source, other_cells=()):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# title\nX = 1  # quick: 2"))
    cell = nbformat.v4.new_code_cell(parameters_source)
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    for src in other_cells:
        nb.cells.append(nbformat.v4.new_code_cell(src))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_quick_parameters_parses_only_quick_comments(tmp_path):
    src = "\n".join([
        "# Full profile; the `# quick:` values are what CI runs.",
        'DATASET = "mnist"          # "mnist" or "digits"',
        "STEPS = 30_000             # quick: 15_000",
        "LR = 1e-3  # quick: 3e-3",
        "N_SWEEP = [5, 10, 20]   # quick: [5, 20]",
        'NAME = "a"  #quick:"b c"',
        "WIDTH = 100",
        "SEED = 0  # the seed",
    ])
    path = _notebook(tmp_path / "nb.ipynb", src, other_cells=["Y = 1  # quick: 2"])
    assert execute.quick_parameters(path) == {"STEPS": 15_000, "LR": 3e-3, "N_SWEEP": [5, 20], "NAME": "b c"}


def test_quick_parameters_needs_a_parameters_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("STEPS = 3  # quick: 1"))
    nbformat.write(nb, str(tmp_path / "nb.ipynb"))
    with pytest.raises(ValueError, match="parameters"):
        execute.quick_parameters(tmp_path / "nb.ipynb")


def test_default_parameters_and_torch_threads(tmp_path, monkeypatch):
    path = _notebook(tmp_path / "nb.ipynb", "STEPS = 30_000  # quick: 10\nTHREADS = 2  # quick: 1\nNAME = 'x'")
    defaults = execute.default_parameters(path)
    assert defaults == {"STEPS": 30_000, "THREADS": 2, "NAME": "x"}
    monkeypatch.delenv("REPLIB_THREADS", raising=False)
    assert execute.torch_threads(defaults) == 2 and execute.torch_threads({}) == 1
    monkeypatch.setenv("REPLIB_THREADS", "4")
    assert execute.torch_threads(defaults) == 4


def test_record_timings_merges_and_keeps_old_entries(tmp_path):
    (tmp_path / "timings.json").write_text(json.dumps({"01_a": {"seconds": 3.0, "profile": "full"},
                                                       "02_b": {"seconds": 9.0, "profile": "full"}}))
    env = execute.environment()
    assert set(env) == {"machine", "versions"} and env["machine"]["cpu"] and env["machine"]["logical_cpus"] >= 1
    assert isinstance(env["machine"]["gpu"], str)  # a GPU's name, or "none"
    assert list(env["versions"]) == ["python", *execute.VERSIONED]
    assert env["versions"]["torch"].startswith("2.13.0") and env["versions"]["papermill"] != "not installed"
    execute.record_timings(tmp_path, {"02_b": {"seconds": 1.5, "profile": "quick", **env}})
    log = json.loads((tmp_path / "timings.json").read_text())
    assert log["01_a"] == {"seconds": 3.0, "profile": "full"}
    assert log["02_b"]["profile"] == "quick" and log["02_b"]["versions"] == env["versions"]


def test_find_notebooks():
    found = execute.find_notebooks(["01"])
    assert found == [execute.NOTEBOOKS / "01_memorization.ipynb"]
    assert found[0].exists()
    everything = execute.find_notebooks()
    assert everything == sorted(everything) and found[0] in everything and len(everything) >= 2
    assert execute.find_notebooks(["01_memorization"]) == found
    with pytest.raises(SystemExit):
        execute.find_notebooks(["99"])


@pytest.mark.parametrize("path", execute.find_notebooks(), ids=lambda p: p.stem)
def test_real_notebook_parameters(path):
    cell = execute.parameters_cell(nbformat.read(path, as_version=4))
    full = {}
    exec(cell.source, {}, full)  # the cell is plain assignments of literals
    quick = execute.quick_parameters(path)
    # every assignment line that carries a quick comment was understood
    tagged = [line for line in cell.source.splitlines() if "quick:" in line and not line.lstrip().startswith("#")]
    assert len(quick) == len(tagged)
    for name, value in quick.items():
        assert name in full, name
        assert type(value) is type(full[name]), (name, value, full[name])
        if isinstance(value, list):
            assert all(type(v) is type(full[name][0]) for v in value)
        assert value != full[name]
    for name, value in full.items():
        ast.literal_eval(repr(value))  # papermill can inject every parameter


def test_explore_static_calls_plot_once_with_defaults(monkeypatch):
    calls = []

    def plot(n, sigma):
        calls.append((n, sigma))
        return "figure"

    assert not widgets.interactive_frontend()
    assert widgets.explore(plot, n=([5, 20, 100], 20), sigma=([0.1, 0.2], 0.1)) == "figure"
    assert calls == [(20, 0.1)]
    # a plain Python process has no kernel front-end even without REPLIB_STATIC
    monkeypatch.delenv("REPLIB_STATIC")
    assert not widgets.interactive_frontend()
    assert widgets.explore(plot, n=([5, 6], 6), sigma=([0.3], 0.3)) == "figure"
    assert calls == [(20, 0.1), (6, 0.3)]


def test_playground_static_plots_every_preset_and_live_wires_a_text_box(monkeypatch):
    calls = []
    assert widgets.playground(lambda captions: calls.append(captions) or "figure", ["a red x", "a blue y"]) == "figure"
    assert calls == [["a red x", "a blue y"]]
    import ipywidgets

    seen = {}
    monkeypatch.setattr(widgets, "interactive_frontend", lambda: True)
    monkeypatch.setattr(ipywidgets, "interact", lambda f, **kw: seen.update(kw, result=f(kw["text"].value)))
    widgets.playground(lambda captions: calls.append(captions) or "live", ["a red x", "a blue y"])
    assert isinstance(seen["text"], ipywidgets.Combobox) and seen["text"].options == ("a red x", "a blue y")
    assert calls[-1] == ["a red x"] and seen["result"] == "live"  # one typed caption at a time


@pytest.mark.slow
def test_papermill_bad_parameter_stops_with_readable_error(tmp_path):
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    src = _notebook(tmp_path / "check.ipynb", "N = 5",
                    other_cells=['from replib.params import check_int\ncheck_int("N", N, 1)'])
    with pytest.raises(PapermillExecutionError) as err:
        pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), parameters={"N": 0}, kernel_name="python3",
                            cwd=str(tmp_path), progress_bar=False)
    text = str(err.value)
    assert "ParameterError" in text and "N" in text and ">= 1" in text


def test_progress_is_plain_text_without_frontend():
    from tqdm.std import tqdm

    bar = widgets.progress(range(3), disable=True)
    assert type(bar) is tqdm  # not the notebook widget, which papermill/nbval would store as a frozen snapshot
    assert list(bar) == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("notebook, name, value, allowed", [
    ("01", "DATASET", "cifar10", "'mnist'"), ("01", "SIGMA", -0.1, ">"),
    ("10", "PARADIGMS", ["accumulate"], "starts with 'replace'"), ("10", "SAMPLER_ETA", 2.0, "<= 1.0")])
def test_real_notebook_stops_on_bad_parameter(tmp_path, notebook, name, value, allowed):
    """A bad value given to a real notebook stops it before any training, naming the parameter and what is allowed."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    src = execute.find_notebooks([notebook])[0]
    with pytest.raises(PapermillExecutionError) as err:
        pm.execute_notebook(str(src), str(tmp_path / src.name), parameters={name: value}, kernel_name="python3",
                            progress_bar=False, cwd=str(tmp_path))
    text = str(err.value)
    assert "ParameterError" in text and name in text and allowed in text


def test_prepared_test_notebooks_run_each_exercise_as_a_student_first(tmp_path):
    """`make test`'s notebooks (--prepare-only --student-check): the quick parameters injected, and every exercise
    cell replaced by its student-then-solution check; the other cells as they are."""
    import nbformat

    from replib import exercises

    execute.run("quick", tmp_path, ["02"], prepare_only=True, student_check=True)
    cells = nbformat.read(str(tmp_path / "02_generalization.ipynb"), as_version=4).cells
    checked = [c.source for c in cells if "verify_exercise_cell" in c.source]
    assert [s.split("verify_exercise_cell(")[1][1:5] for s in checked] == ["02.1", "02.2"]
    assert not any(exercises.BEGIN in c.source for c in cells if "verify_exercise_cell" not in c.source)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in cells)
    with pytest.raises(SystemExit):
        execute.main(["02", "--student-check", "--out", str(tmp_path)])  # only with --prepare-only
