"""How notebooks 08 and 09 start and say which model every number came from: `start` checks MODE, DEVICE and DTYPE,
loads SD1.4 or its stand-in (`models.sd14`) and the published prompt sets (`data.prompts`), and builds the `Banner`
that tells the reader, loudly, when the model is the stand-in or the prompts are the kit's examples.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..data.prompts import ENV_VAR as PROMPTS_ENV_VAR
from ..models.sd14 import (
    DTYPES,
    ENV_VAR,
    MODES,
    LoadedPipeline,
    how_to_get_weights,
    load_or_standin,
)
from ..params import check_choice
from ..session import DEVICES

STANDIN_TAG = "[STAND-IN: not meaningful]"


def tag(loaded: LoadedPipeline) -> str:
    """A prefix for every number a notebook prints: the stand-in tag in stand-in mode, else ''."""
    return f"{STANDIN_TAG} " if loaded.standin else ""


def model_label(loaded: LoadedPipeline) -> str:
    """A column value or figure-title suffix naming the model: 'SD1.4 (source)' or the stand-in warning."""
    return f"random SD1.4-shaped stand-in {STANDIN_TAG}" if loaded.standin else f"SD1.4 ({loaded.source})"


@dataclass
class Banner:
    """The box at the top of the SD1.4 notebooks: which model is loaded, and in stand-in mode that nothing computed
    with it is evidence; `example_prompts` adds that the prompts are the kit's examples, not the published sets.
    Renders as HTML in Jupyter and the book, as Markdown or plain text elsewhere."""

    loaded: LoadedPipeline
    example_prompts: bool = False

    def _lines(self) -> tuple[str, str]:
        l = self.loaded
        where = f"{l.device}, {str(l.dtype).replace('torch.', '')}, loaded in {l.seconds:.1f} s"
        if l.standin:
            head = "STAND-IN MODE: scores and images below are NOT meaningful"
            body = (f"The real Stable Diffusion v1.4 weights are not loaded, so this notebook runs on small random "
                    f"components with SD1.4's architecture shape ({l.source}; {where}). Every step runs exactly as it "
                    f"would on SD1.4, and every number is tagged {STANDIN_TAG}. To run the real experiment: "
                    f"{how_to_get_weights().splitlines()[1].strip()} then export {ENV_VAR}=... and set MODE = 'real'.")
        else:
            head, body = "Stable Diffusion v1.4", f"Loaded {l.source} ({where})."
        if self.example_prompts:
            head = head.replace("STAND-IN MODE", "STAND-IN MODE ON EXAMPLE PROMPTS")
            body += (f" The prompts are not the published sets either: those could not be loaded here (no "
                     f"${PROMPTS_ENV_VAR} and no download), so the kit's own example prompts stand in for them "
                     f"(replib.data.example_prompts, written for the kit; nothing about memorization follows from them). "
                     f"For the published sets: export {PROMPTS_ENV_VAR}=/folder/with/the/files, or run online once.")
        return head, body

    def _repr_html_(self) -> str:
        import html

        head, body = self._lines()
        colour = "#b00020" if self.loaded.standin else "#1b5e20"
        return (f'<div style="border:3px solid {colour};padding:0.6em 1em;margin:0.5em 0;border-radius:6px">'
                f'<b style="color:{colour};font-size:1.15em">{html.escape(head)}</b><br>{html.escape(body)}</div>')

    def _repr_markdown_(self) -> str:
        head, body = self._lines()
        return f"> **{head}**\n>\n> {body}"

    def __repr__(self) -> str:
        head, body = self._lines()
        return f"{head}\n{body}"


def banner(loaded: LoadedPipeline, *prompt_sets) -> Banner:
    """The banner for `loaded`; pass the notebook's `prompts.PromptSet`s so it says when they are the kit's examples."""
    return Banner(loaded, example_prompts=any(getattr(s, "example", False) for s in prompt_sets))


@dataclass
class Start:
    """What `start` hands a notebook: the loaded pipeline, the tag for its numbers, its prompt sets and the banner."""

    loaded: LoadedPipeline
    tag: str
    sets: dict
    banner: Banner

    @property
    def pipe(self):
        return self.loaded.pipe


def start(mode: str, path: str | os.PathLike | None, device: str, dtype: str, seed: int, threads: int,
          prompt_sets: dict[str, str]) -> Start:
    """The first cell of notebooks 08 and 09: check MODE, DEVICE and DTYPE (named as the notebooks name them), seed
    and set the threads, load SD1.4 or the stand-in, load the published prompt sets {label: set name} (the kit's
    examples in their place only in stand-in mode, when the published ones are out of reach), and build the banner."""
    from ..data.prompts import load_or_examples
    from ..session import setup

    check_choice("MODE", mode, MODES)
    check_choice("DEVICE", device, DEVICES)
    check_choice("DTYPE", dtype, DTYPES)
    setup(seed, threads=threads, device=device)  # "cuda" without a GPU: an error naming DEVICE
    loaded = load_or_standin(mode, path or None, device, dtype)
    sets = {label: load_or_examples(name, loaded.standin) for label, name in prompt_sets.items()}
    return Start(loaded, tag(loaded), sets, banner(loaded, *sets.values()))
