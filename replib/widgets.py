"""Thin ipywidgets explorers: a pure plot function does the work; the widget only wires sliders to it.

With no kernel front-end attached (papermill, nbval, the built book) the explorer calls the plot function once with
the default values, so the page still shows a figure. The runners set REPLIB_STATIC=1 to say so; a plain Python
process (no IPython kernel) is static too.
"""
from __future__ import annotations

import os
from typing import Any, Callable


def interactive_frontend() -> bool:
    """True inside a Jupyter kernel that a front-end can render widgets in (not under papermill/nbval/book runs)."""
    if os.environ.get("REPLIB_STATIC", "") not in ("", "0"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def explore(plot: Callable[..., Any], **controls: tuple[list[Any], Any]) -> Any:
    """Explore `plot(**values)` with one slider per keyword: controls[name] = (allowed values, default).

    Interactive: a selection slider per control, re-plotting on release. Static: `plot(**defaults)` once."""
    defaults = {name: default for name, (_, default) in controls.items()}
    if not interactive_frontend():
        return plot(**defaults)
    import ipywidgets as w

    sliders = {name: w.SelectionSlider(options=list(options), value=default, description=name,
                                       continuous_update=False)
               for name, (options, default) in controls.items()}
    return w.interact(plot, **sliders)


def playground(plot: Callable[[list[str]], Any], presets: list[str], name: str = "caption") -> Any:
    """Type a text (a caption) and see `plot([text])`; a box that also offers the `presets`. Static (no live
    front-end): `plot(presets)` once, so the page shows every preset."""
    if not interactive_frontend():
        return plot(list(presets))
    import ipywidgets as w

    box = w.Combobox(value=presets[0], options=list(presets), description=name, ensure_option=False,
                     continuous_update=False, layout=w.Layout(width="60%"))
    return w.interact(lambda text: plot([text]), text=box)


def progress(iterable, **kwargs):
    """A tqdm progress bar: the notebook widget with a live front-end, plain text otherwise (papermill, nbval, the
    book), where a widget would be stored as a frozen snapshot.

    Plain text prints at most one line a minute (and the last one), so a log file or CI keeps a few lines per
    training. Callers update the bar with `set_postfix(..., refresh=False)`: the default `refresh=True` prints on
    every call and would bypass that interval."""
    if interactive_frontend():
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm

        kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), 60.0)  # a few lines, not a scroll of them
    return tqdm(iterable, **kwargs)
