"""Example prompts written for the kit, used only by the SD1.4 stand-in when the published prompt sets are out of reach.

These are NOT Webster's memorized prompts nor Jeon et al.'s non-memorized prompts, and nothing about memorization can
be concluded from them: "example A" only takes the place of the memorized set and "example B" that of the non-memorized
set, so that notebooks 08 and 09 run end to end in stand-in mode with no prompt files and no network. Each group is
every (subject, style) pair of eight subjects and eight styles: 64 distinct, readable prompts, enough for notebook 09's
memorized rows (taken modulo 64) and for notebook 08's stand-in (STANDIN_PROMPTS of them). Group A's subjects are
people, so notebook 09's "elderly" push has a person to act on. `prompts.load_or_examples` hands them out,
labelled, as a `PromptSet` with `example=True`.
"""
from __future__ import annotations

NOTE = ("example prompts written for the kit (replib.data.example_prompts), not a published prompt set: "
        "nothing about memorization can be concluded from them")


def _grid(subjects: tuple[str, ...], styles: tuple[str, ...]) -> tuple[str, ...]:
    """Every style applied to every subject, subject by subject (so the first prompts share a subject)."""
    return tuple(style.format(subject) for subject in subjects for style in styles)


# Example A: in place of the memorized set (people, so that steering toward a person's age has something to change).
EXAMPLE_A = _grid(
    subjects=("an old lighthouse keeper", "a young violinist", "a chef in a busy kitchen",
              "a gardener with a wheelbarrow", "a cyclist on a mountain road", "a librarian among tall shelves",
              "a fisherman mending a net", "a dancer on an empty stage"),
    styles=("a portrait photo of {}", "an oil painting of {}", "a pencil sketch of {}", "a watercolor of {}",
            "a black and white photo of {}", "a children's book illustration of {}", "a close-up photo of {}",
            "a wide-angle photo of {}"),
)

# Example B: in place of the non-memorized set (objects and places).
EXAMPLE_B = _grid(
    subjects=("a red bicycle leaning on a wall", "a bowl of ramen", "a snowy mountain village",
              "a sailboat at sunset", "a cat asleep on a windowsill", "a stack of old books", "a glass teapot",
              "a desert highway at noon"),
    styles=("a photo of {}", "a painting of {}", "a low-poly 3D render of {}", "a line drawing of {}",
            "a postcard of {}", "a blurry phone photo of {}", "a poster of {}", "an isometric illustration of {}"),
)

# Keyed by the published set each group takes the place of (the names of `prompts.PROMPT_SETS`).
EXAMPLES: dict[str, tuple[str, ...]] = {"memorized": EXAMPLE_A, "nonmemorized": EXAMPLE_B}
