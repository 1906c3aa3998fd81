"""Captioned glyph images made on the spot: a small text-to-image data set that needs no download.

Each image is one letter or digit in a named colour on a background of another named colour, small in one of five
places or large in the middle, upright or tilted. Its caption says all of that in fixed words, e.g.
"a red letter K on a blue background, small, top left" or "a white digit 7 on a black background, large, center,
tilted left". A text-conditioned diffusion model small enough to train on a CPU can learn it, and every attribute of a
generated image can be measured back (`colour_share`, `glyph_colours`), which is what steering experiments need.

Each image also has *nuisance attributes* that its caption does not mention: the font (DejaVu Sans Bold, DejaVu Serif
Bold or DejaVu Sans Mono Bold, the font files matplotlib ships, so every machine draws the same pixels) and a small
shift of the glyph (`dx`, `dy` whole pixels). Why: so that one caption admits many images. Were the caption to fix the
image, a model that generalizes perfectly would reproduce the training image of every training caption, and a
"copied or new?" test by nearest-neighbour distance to the training set could not tell memorization from
generalization. With nuisances, a model that returns, for a caption, exactly the one training image it saw with that
caption is memorizing; one that generalizes draws that caption in fonts and places it never saw together with it.
`holdout_split` goes further and holds whole captions out, to evaluate on captions a model never saw.

Why these choices:

- Palette: the eight corners of the RGB cube (red, green, blue, yellow, cyan, magenta, white, black). They are as far
  apart as colours can be, and no palette colour is a blend of two others, so an antialiased edge pixel (a blend of
  glyph and background colour) can be traced back to the glyph colour without ambiguity.
- Layout, for an image of S x S pixels: a *small* glyph sits in a box of S/2 x S/2 pixels, one of the four quadrants
  ("top left", ...) or the middle ("center", box offset S/4); its capital height is 0.75 * S/2 (6 px at S=16, 12 px at
  S=32). A *large* glyph fills an S x S box and is always "center" (there is no room to put it elsewhere); its
  capital height is 0.75 * S (12 px at 16, 24 px at 32). A glyph that would not fit its box with a margin (wide
  letters such as W, or tilted ones) is shrunk to 7/8 of the box. Every font is scaled to the same capital height
  (that of its "H").
- Rotation: 0 (upright, no word in the caption), +15 degrees counter-clockwise ("tilted left") or -15 ("tilted right").
- Nuisances: the font is uniform over `fonts`; the glyph is then shifted by `dx` columns (positive: right) and `dy`
  rows (positive: down), each uniform over the whole numbers in [-j, j], j = max(1, S // 16) by default (+-1 px at
  16x16, +-2 at 32x32, +-4 at 64x64), then clipped so that no covered pixel leaves the image (a large glyph nearly
  fills the image, so some cannot move one way, which makes a shift of 0 somewhat more frequent than +-j; a small
  glyph may reach up to j pixels into a neighbouring quadrant).
  `jitter=0, fonts=("sans",)` gives exactly the images of the earlier version without nuisances (they are drawn
  after everything else, so the captions of a seed do not depend on them). The font, dx and dy are columns of
  `GlyphSet.attributes`, so `render` reproduces any image of a set exactly. No rotation jitter: a continuous tilt
  would make nearly every image a mask of its own and defeat the mask cache that keeps generation fast.
- Rasterising: each distinct (character, font, glyph size, rotation, image size) is drawn once, as a
  4x4-supersampled point-in-polygon test on the glyph outline, then averaged to an antialiased coverage mask and
  cached; the shift is applied by reading each image's window out of the zero-padded masks (one numpy gather for the
  batch), and an image is then background + coverage * (glyph colour - background), composed for the whole batch at
  once. Measured with one torch thread on a busy 2-core machine: 5,000 images of 16x16 in 0.4-0.55 s from a
  cold cache (36 characters x 3 fonts x 2 sizes x 3 rotations = 648 masks drawn; the first call of a process also
  loads the fonts), 0.05 s once the masks are cached; 5,000 images of 32x32 in 1.1-1.2 s cold, 0.1-0.16 s warm.
  Measuring (`colour_share`) 5,000 images takes about 0.2 s at 16x16 and 1.2 s at 32x32.

Images are float32 tensors of shape (n, 3, S, S) with values in [-1, 1], like the other data in `replib.data`.
Only numpy, torch, pandas and matplotlib's font and path code are used (no canvas, no display).
"""
from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path as FilePath
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D

from ..params import ParameterError, check_choice, check_float, check_int

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}
COLOURS = tuple(PALETTE)
DEFAULT_ALPHABET = string.ascii_uppercase + string.digits
GLYPH_SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
ROTATIONS = (0, 15, -15)  # degrees, counter-clockwise
ROTATION_WORDS = {0: "", 15: "tilted left", -15: "tilted right"}
IMAGE_SIZES = (16, 32, 64)
# Font files shipped with matplotlib, by the short name used in `GlyphSet.attributes["font"]`.
FONT_FILES = {"sans": "DejaVuSans-Bold.ttf", "serif": "DejaVuSerif-Bold.ttf", "mono": "DejaVuSansMono-Bold.ttf"}
FONTS = tuple(FONT_FILES)
CAPTION_COLUMNS = ("char", "kind", "colour", "background", "size", "position", "rotation")  # what the caption says
NUISANCE_COLUMNS = ("font", "dx", "dy")  # what it does not say
ATTRIBUTE_COLUMNS = CAPTION_COLUMNS + NUISANCE_COLUMNS
_NUISANCE_DEFAULTS = {"font": "sans", "dx": 0, "dy": 0}  # for attribute rows without the nuisance columns

# Where each glyph size may go: a small glyph anywhere, a large one only in the middle (it fills the image).
ALLOWED_POSITIONS = {"small": POSITIONS, "large": ("center",)}
_BOX_FRACTION = {"small": 0.5, "large": 1.0}  # side of the glyph's box, as a fraction of the image side
_CAP_HEIGHT = 0.75  # capital height, as a fraction of the box side
_MAX_EXTENT = 0.875  # the glyph's bounding box never exceeds this fraction of its box (a margin on every side)
_SUPERSAMPLE = 4  # subpixels per pixel side for antialiasing
_CHUNK = 1024  # images measured at once by `decompose`
_FONT_DIR = FilePath(matplotlib.get_data_path()) / "fonts" / "ttf"
_PALETTE_01 = torch.tensor(list(PALETTE.values()), dtype=torch.float32)  # (K, 3), values in [0, 1]


@dataclass
class GlyphSet:
    """Images (n, 3, S, S) in [-1, 1], their captions and one attribute row per image (columns ATTRIBUTE_COLUMNS:
    the CAPTION_COLUMNS the caption spells out, then the NUISANCE_COLUMNS font, dx, dy that it does not).

    Note: read the glyph-size column as ``attributes["size"]``; ``attributes.size`` is pandas' element count."""

    images: torch.Tensor
    captions: list[str]
    attributes: pd.DataFrame

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def image_size(self) -> int:
        """S, the side of the images in pixels."""
        return int(self.images.shape[-1])

    def subset(self, idx: Any) -> GlyphSet:
        """The images `idx` (indices, a boolean mask or a slice), captions and attributes kept aligned."""
        if isinstance(idx, slice):
            idx = range(len(self))[idx]
        idx = idx if isinstance(idx, torch.Tensor) else torch.from_numpy(np.array(idx))
        if idx.dtype == torch.bool:
            if len(idx) != len(self):
                raise ParameterError(f"parameter idx is a mask of length {len(idx)}; it must have length {len(self)}")
            idx = torch.nonzero(idx).flatten()
        idx = idx.long().reshape(-1)
        rows = idx.tolist()
        return GlyphSet(self.images[idx], [self.captions[i] for i in rows],
                        self.attributes.iloc[rows].reset_index(drop=True))


# ----------------------------------------------------------------------------------------------------- drawing


def _glyph_kind(char: str) -> str:
    return "digit" if char.isdigit() else "letter"


def caption(attributes: Mapping[str, Any]) -> str:
    """The caption of one attribute combination, in fixed words:
    "a {colour} {letter|digit} {char} on a {background} background, {size}, {position}[, tilted left|right]"."""
    return _caption(attributes["char"], attributes["colour"], attributes["background"], attributes["size"],
                    attributes["position"], attributes["rotation"])


def _caption(char: str, colour: str, background: str, glyph_size: str, position: str, rotation: int) -> str:
    tilt = ROTATION_WORDS[int(rotation)]
    return (f"a {colour} {_glyph_kind(str(char))} {char} on a {background} background, {glyph_size}, {position}"
            + (f", {tilt}" if tilt else ""))


@lru_cache(maxsize=None)
def _outline(char: str, font: str = "sans") -> tuple[np.ndarray, ...]:
    """The closed contours of `char` in `font` as polygons in font units (em = 1, y up), curves flattened to 8
    segments each."""
    path = TextPath((0, 0), char, size=1, prop=FontProperties(fname=_FONT_DIR / FONT_FILES[font]))
    contours, current = [], []
    t = np.linspace(0.0, 1.0, 9)[1:]
    for segment, code in path.iter_bezier():
        if code == Path.MOVETO:
            if len(current) > 2:
                contours.append(np.array(current))
            current = [segment.control_points[0]]
        elif segment.degree == 1 or code == Path.CLOSEPOLY:
            current.append(segment.control_points[-1])
        else:
            current.extend(segment(t))
    if len(current) > 2:
        contours.append(np.array(current))
    if not contours:
        raise ParameterError(f"parameter alphabet contains {char!r}, which the font {font!r} cannot draw")
    return tuple(contours)


@lru_cache(maxsize=None)
def _cap_height(font: str = "sans") -> float:
    """Height of "H" in font units: the common scale, so every character of one glyph size is drawn equally tall,
    whatever its font."""
    return float(_outline("H", font)[0][:, 1].max())


@lru_cache(maxsize=None)
def _box_coverage(char: str, font: str, glyph_size: str, rotation: int, image_size: int) -> np.ndarray:
    """Antialiased coverage in [0, 1] of `char` centred in its square box (side S/2 or S), drawn once and cached.

    Why point-in-polygon per contour with XOR: it is the even-odd fill rule, which leaves the holes of A, B, 0, 8 open
    (matplotlib's `Path.contains_points` on the whole glyph path would fill them)."""
    box = int(round(image_size * _BOX_FRACTION[glyph_size]))
    turn = Affine2D().rotate_deg(rotation)
    contours = [turn.transform(c) for c in _outline(char, font)]
    points = np.concatenate(contours)
    lo, hi = points.min(0), points.max(0)
    scale = _CAP_HEIGHT * box / _cap_height(font)  # pixels per font unit
    scale = min(scale, _MAX_EXTENT * box / float((hi - lo).max()))
    centre = (lo + hi) / 2
    fine = box * _SUPERSAMPLE
    ys, xs = np.mgrid[0:fine, 0:fine] + 0.5
    grid = np.column_stack([xs.ravel(), ys.ravel()])
    inside = np.zeros(len(grid), dtype=bool)
    for c in contours:  # font units (y up) -> subpixel coordinates (row 0 at the top), glyph centred in the box
        sub = (c - centre) * scale * _SUPERSAMPLE * np.array([1.0, -1.0]) + fine / 2
        inside ^= Path(sub).contains_points(grid)
    cover = inside.reshape(box, _SUPERSAMPLE, box, _SUPERSAMPLE).mean(axis=(1, 3), dtype=np.float32)
    cover.flags.writeable = False
    return cover


def _box_offset(glyph_size: str, position: str, image_size: int) -> tuple[int, int]:
    """(row, column) of the top left corner of the glyph's box."""
    if glyph_size == "large":
        return 0, 0
    half, quarter = image_size // 2, image_size // 4
    return {"top left": (0, 0), "top right": (0, half), "bottom left": (half, 0), "bottom right": (half, half),
            "center": (quarter, quarter)}[position]


@lru_cache(maxsize=None)
def _coverage(char: str, font: str, glyph_size: str, rotation: int, position: str, image_size: int
              ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Coverage of the whole S x S image, unshifted: the cached box pasted at its position (cached too), and the
    shifts that keep every covered pixel inside the image: (lowest dx, highest dx, lowest dy, highest dy)."""
    box = _box_coverage(char, font, glyph_size, rotation, image_size)
    out = np.zeros((image_size, image_size), dtype=np.float32)
    r, c = _box_offset(glyph_size, position, image_size)
    out[r:r + len(box), c:c + len(box)] = box
    out.flags.writeable = False
    rows, cols = np.nonzero(out.any(1))[0], np.nonzero(out.any(0))[0]
    last = image_size - 1
    return out, (-int(cols[0]), last - int(cols[-1]), -int(rows[0]), last - int(rows[-1]))


def clear_cache() -> None:
    """Forget every drawn glyph (to time a cold start, or free memory)."""
    for f in (_outline, _cap_height, _box_coverage, _coverage):
        f.cache_clear()


def _placed(frame: pd.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct unshifted masks of the rows (m, S, S), each row's index into them (n,), and their shift limits
    (m, 4) as `_coverage` gives them. Rows without a font column are drawn in "sans"."""
    fonts = frame["font"] if "font" in frame else ["sans"] * len(frame)
    keys = list(zip(frame["char"], fonts, frame["size"], frame["rotation"].astype(int), frame["position"],
                    [size] * len(frame)))
    distinct: dict[tuple, int] = {}
    index = np.array([distinct.setdefault(k, len(distinct)) for k in keys], dtype=np.int64)
    drawn = [_coverage(*k) for k in distinct]
    table = np.stack([d[0] for d in drawn]) if drawn else np.zeros((0, size, size), dtype=np.float32)
    limits = np.array([d[1] for d in drawn], dtype=np.int64).reshape(-1, 4)
    return table, index, limits


def _shifts(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The dx and dy of the rows as int64 arrays (0 where the column is missing)."""
    n = len(frame)
    return tuple(frame[c].to_numpy(dtype=np.int64) if c in frame else np.zeros(n, dtype=np.int64)
                 for c in ("dx", "dy"))


def _check_image_size(size: Any) -> int:
    return check_choice("size", size, IMAGE_SIZES)


def _check_attributes(frame: pd.DataFrame) -> None:
    """Every column holds allowed values (checked on the distinct values, so a big batch costs little)."""
    missing = [c for c in ("char", "colour", "background", "size", "position", "rotation") if c not in frame]
    if missing:
        raise ParameterError(f"parameter attributes lacks {', '.join(missing)}: it needs the columns "
                             + ", ".join(c for c in CAPTION_COLUMNS if c != "kind")
                             + " (and may have " + ", ".join(NUISANCE_COLUMNS) + ")")
    for char in pd.unique(frame["char"]):
        _check_char("char", char)
    if "font" in frame:
        for font in pd.unique(frame["font"]):
            check_choice("font", font, FONTS)
    for name in ("dx", "dy"):
        if name in frame:
            for value in pd.unique(frame[name]):
                check_int(name, value, minimum=-max(IMAGE_SIZES), maximum=max(IMAGE_SIZES))
    for name, allowed in (("colour", COLOURS), ("background", COLOURS), ("size", GLYPH_SIZES),
                          ("position", POSITIONS), ("rotation", ROTATIONS)):
        for value in pd.unique(frame[name]):
            check_choice(name, value, allowed)
    if (frame["colour"] == frame["background"]).any():
        bad = frame.loc[frame["colour"] == frame["background"], "colour"].iloc[0]
        raise ParameterError(f"parameter background={bad!r} is not allowed: background must differ from colour")
    for glyph_size, allowed in ALLOWED_POSITIONS.items():
        for value in pd.unique(frame.loc[frame["size"] == glyph_size, "position"]):
            check_choice(f"position (of a {glyph_size} glyph)", value, allowed)


def _check_char(name: str, char: Any) -> str:
    if not (isinstance(char, str) and len(char) == 1 and char.isascii() and char.isalnum()):
        raise ParameterError(f"parameter {name}={char!r} is not allowed: {name} must be one ASCII letter or digit")
    return char


def render_many(attributes: pd.DataFrame, size: int = 16) -> torch.Tensor:
    """Images (n, 3, S, S) in [-1, 1] of the attribute rows (columns char, colour, background, size, position,
    rotation, and the nuisances font, dx, dy; others are ignored). A missing nuisance column means font "sans" and no
    shift. A shift that would push a covered pixel out of the image is refused. Why a batch function: the glyph masks
    are gathered, shifted and coloured all at once."""
    size = _check_image_size(size)
    _check_attributes(attributes)
    if not len(attributes):
        return torch.zeros(0, 3, size, size)
    table, index, limits = _placed(attributes, size)
    dx, dy = _shifts(attributes)
    lim = limits[index]  # (n, 4)
    for name, shift, lo, hi in (("dx", dx, lim[:, 0], lim[:, 1]), ("dy", dy, lim[:, 2], lim[:, 3])):
        bad = np.nonzero((shift < lo) | (shift > hi))[0]
        if len(bad):
            i = int(bad[0])
            raise ParameterError(f"parameter {name}={int(shift[i])} is not allowed (row {i}): {name} must keep the "
                                 f"glyph inside the image, here between {int(lo[i])} and {int(hi[i])}")
    pad = int(max(np.abs(dx).max(), np.abs(dy).max()))
    if pad:  # out[r, c] = mask[r - dy, c - dx]: read each image's window out of the zero-padded masks
        table = np.pad(table, ((0, 0), (pad, pad), (pad, pad)))
        span = np.arange(size)
        rows = (pad - dy)[:, None] + span  # (n, S)
        cols = (pad - dx)[:, None] + span
        cover = table[index[:, None, None], rows[:, :, None], cols[:, None, :]][:, None]
    else:
        cover = table[index][:, None]  # (n, 1, S, S)
    palette = _PALETTE_01.numpy() * 2.0 - 1.0
    colour_index = {c: i for i, c in enumerate(COLOURS)}
    fg = palette[[colour_index[c] for c in attributes["colour"]]][:, :, None, None]
    bg = palette[[colour_index[c] for c in attributes["background"]]][:, :, None, None]
    return torch.from_numpy((bg + cover * (fg - bg)).astype(np.float32))


def render(attributes: Mapping[str, Any] | pd.Series, size: int = 16) -> torch.Tensor:
    """One image (3, S, S) in [-1, 1] of one attribute combination (a dict or a row of `GlyphSet.attributes`):
    the same pixels as that row's image in any glyph set of the same image size. Without font, dx, dy the glyph is
    drawn in "sans", unshifted."""
    row = {k: attributes[k] for k in ("char", "colour", "background", "size", "position", "rotation")
           + NUISANCE_COLUMNS if k in attributes}
    return render_many(pd.DataFrame([row]), size)[0]


# ---------------------------------------------------------------------------------------------------- sampling


def _check_names(name: str, values: Any, allowed: Sequence[Any]) -> list[Any]:
    """A non-empty list of allowed values, duplicates dropped (a single string counts as a list of one)."""
    if isinstance(values, (str, int)):
        values = [values]
    if not isinstance(values, Iterable) or not (values := list(dict.fromkeys(values))):
        raise ParameterError(f"parameter {name}={values!r} is not allowed: {name} must be a non-empty list of "
                             + ", ".join(repr(a) for a in allowed))
    return [check_choice(name, v, allowed) for v in values]


def _check_alphabet(alphabet: Any) -> str:
    if not isinstance(alphabet, str) or not alphabet or len(set(alphabet)) != len(alphabet) or not all(
        c.isascii() and c.isalnum() for c in alphabet
    ):
        raise ParameterError(f"parameter alphabet={alphabet!r} is not allowed: alphabet must be a non-empty string "
                             "of distinct ASCII letters and digits, e.g. 'ABC0123'")
    return alphabet


def make_glyph_set(
    n: int,
    size: int = 16,
    seed: int = 0,
    alphabet: str = DEFAULT_ALPHABET,
    colours: Sequence[str] = COLOURS,
    backgrounds: Sequence[str] = COLOURS,
    sizes: Sequence[str] = GLYPH_SIZES,
    positions: Sequence[str] = POSITIONS,
    rotations: Sequence[int] = ROTATIONS,
    fonts: Sequence[str] = FONTS,
    jitter: int | None = None,
) -> GlyphSet:
    """`n` captioned glyph images of `size` x `size` pixels, drawn with `seed` (same seed, same set).

    Each image independently: a character uniform over `alphabet`; a (glyph colour, background) pair uniform over the
    pairs of `colours` x `backgrounds` whose colours differ; a glyph size uniform over `sizes`; a position uniform over
    the `positions` that glyph size allows (a large glyph is always "center"); a rotation uniform over `rotations`.
    Restrict the lists to make an easier set (e.g. `sizes=("large",), rotations=(0,)`) or to hold combinations out.

    Then the nuisances, which the caption does not mention: a font uniform over `fonts` (names from FONTS), and a
    shift `dx`, `dy` of the glyph, each uniform over the whole numbers in [-jitter, jitter], clipped so the glyph stays
    inside the image. `jitter=None` means max(1, size // 16), and at most size // 4 is allowed; `jitter=0` and
    `fonts=("sans",)` make the caption determine the image again (the images of the version without nuisances).
    """
    n = check_int("n", n, 1)
    size = _check_image_size(size)
    seed = check_int("seed", seed, 0)
    alphabet = _check_alphabet(alphabet)
    colours = _check_names("colours", colours, COLOURS)
    backgrounds = _check_names("backgrounds", backgrounds, COLOURS)
    sizes = _check_names("sizes", sizes, GLYPH_SIZES)
    positions = _check_names("positions", positions, POSITIONS)
    rotations = _check_names("rotations", rotations, ROTATIONS)
    fonts = _check_names("fonts", fonts, FONTS)
    jitter = max(1, size // 16) if jitter is None else check_int("jitter", jitter, 0, size // 4)
    pairs = [(c, b) for c in colours for b in backgrounds if c != b]
    if not pairs:
        raise ParameterError(f"parameter backgrounds={backgrounds!r} is not allowed: with colours={colours!r} "
                             "backgrounds must hold a colour other than the glyph colour")
    places = {s: [p for p in ALLOWED_POSITIONS[s] if p in positions] for s in sizes}
    for s, allowed in places.items():
        if not allowed:
            raise ParameterError(f"parameter positions={positions!r} is not allowed: {s} glyphs are drawn only at "
                                 + ", ".join(repr(p) for p in ALLOWED_POSITIONS[s]) + f", so positions must "
                                 f"include one of them or sizes must leave out {s!r}")

    rng = np.random.default_rng(seed)
    chars = np.array(list(alphabet))[rng.integers(len(alphabet), size=n)]
    pair = rng.integers(len(pairs), size=n)
    glyph_size = np.array(sizes, dtype=object)[rng.integers(len(sizes), size=n)]
    u = rng.random(n)  # the position is drawn within the ones this image's glyph size allows
    position = [places[s][int(x * len(places[s]))] for s, x in zip(glyph_size, u)]
    rotation = np.array(rotations, dtype=np.int64)[rng.integers(len(rotations), size=n)]
    attributes = pd.DataFrame({
        "char": chars.tolist(),
        "kind": [_glyph_kind(c) for c in chars],
        "colour": [pairs[i][0] for i in pair],
        "background": [pairs[i][1] for i in pair],
        "size": glyph_size.tolist(),
        "position": position,
        "rotation": rotation,
    })
    # The nuisances are drawn last, so the caption attributes of a seed do not depend on them.
    attributes["font"] = np.array(fonts, dtype=object)[rng.integers(len(fonts), size=n)].tolist()
    dx = rng.integers(-jitter, jitter + 1, size=n)
    dy = rng.integers(-jitter, jitter + 1, size=n)
    _, index, limits = _placed(attributes, size)
    lim = limits[index]
    attributes["dx"] = np.clip(dx, lim[:, 0], lim[:, 1]).astype(np.int64)
    attributes["dy"] = np.clip(dy, lim[:, 2], lim[:, 3]).astype(np.int64)
    captions = [_caption(*row) for row in zip(*(attributes[c] for c in CAPTION_COLUMNS if c != "kind"))]
    return GlyphSet(render_many(attributes, size), captions, attributes)


def holdout_split(glyphs: GlyphSet, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a glyph set by caption: (training indices, held-out indices), each sorted, int64.

    A share `frac` of the distinct caption strings, chosen with `seed`, is held out, and every image of a held-out
    caption goes to the held-out part, so no caption of the held-out part appears in the training part: a model
    trained on the first part is evaluated on captions it never saw (though each of their attributes it did see).
    The number held out is round(frac * distinct captions), at least 1 and at most all but one; the share of images
    held out is about `frac`, not exactly (captions repeat unevenly)."""
    if not isinstance(glyphs, GlyphSet):
        raise ParameterError(f"parameter glyphs={type(glyphs).__name__} is not allowed: glyphs must be a GlyphSet")
    frac = check_float("frac", frac, 0.0, 1.0, strict=True)
    if frac >= 1.0:
        raise ParameterError(f"parameter frac={frac!r} is not allowed: frac must be a number > 0 and < 1")
    seed = check_int("seed", seed, 0)
    codes, distinct = pd.factorize(pd.Series(glyphs.captions, dtype=object))
    if len(distinct) < 2:
        raise ParameterError(f"parameter glyphs has {len(distinct)} distinct caption(s): glyphs must have at least "
                             "2 to split by caption")
    k = min(len(distinct) - 1, max(1, round(frac * len(distinct))))
    held = np.zeros(len(distinct), dtype=bool)
    held[np.random.default_rng(seed).permutation(len(distinct))[:k]] = True
    is_held = held[codes]
    return np.nonzero(~is_held)[0].astype(np.int64), np.nonzero(is_held)[0].astype(np.int64)


def unseen(n: int, size: int, seen_captions, seed: int) -> GlyphSet:
    """`n` rendered glyphs whose captions are not in `seen_captions`: crisp real images a model trained on those
    captions never saw (the control of a memorization detector, which must not flag them)."""
    n = check_int("n", n, 1)
    seen = set(seen_captions)
    pool = make_glyph_set(2 * n + len(seen), size, seed=seed)
    keep = [i for i, c in enumerate(pool.captions) if c not in seen][:n]
    if len(keep) < n:
        raise ParameterError(f"parameter n={n!r} is not allowed: only {len(keep)} unseen captions were drawn")
    return pool.subset(keep)


def with_duplicates(glyphs: GlyphSet, n_duplicated: int, copies: int) -> tuple[GlyphSet, torch.Tensor]:
    """A training set in which the first `n_duplicated` (caption, image) pairs of `glyphs` appear `copies` times each
    and every other pair once: how web-scale data duplicates some images, and what makes a model memorize them.
    Returns (training set, is_duplicated: bool (len(glyphs),) over the rows of `glyphs`, the ground truth)."""
    from .digits import duplicate

    check_int("n_duplicated", n_duplicated, 0, len(glyphs))
    check_int("copies", copies, 1)
    rows, is_dup = duplicate(torch.arange(len(glyphs)), torch.arange(n_duplicated), copies)
    return glyphs.subset(rows), is_dup


# -------------------------------------------------------------------------------------------- measuring colours


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ParameterError(f"parameter images has shape {tuple(images.shape)}: images must be RGB, of shape "
                             "(n, 3, H, W) or (3, H, W), with values in [-1, 1]")
    return images.detach().float()


def _nearest(pixels01: torch.Tensor) -> torch.Tensor:
    """Index of the nearest palette colour of each pixel (..., 3) in [0, 1]."""
    return ((pixels01[..., None, :] - _PALETTE_01) ** 2).sum(-1).argmin(-1)


def off_palette(images: torch.Tensor) -> torch.Tensor:
    """How far each image's pixels lie from the 8 palette colours, on average (RGB distance in [0, 1] units): near 0
    for a rendered glyph (only antialiased edges fall between colours), larger for a blotchy generation. A score that
    reads only this cleanliness is the confound a memorization detector's crisp-image control must rule out."""
    p = ((_as_batch(images) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    return ((p[..., None, :] - _PALETTE_01) ** 2).sum(-1).min(-1).values.sqrt().mean((1, 2))


def _background_index(images: torch.Tensor, background: str | Sequence[str] | None) -> torch.Tensor:
    n = len(images)
    if background is None:  # the most common nearest palette colour on the border, where glyphs (almost) never reach
        p = ((images + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
        border = torch.cat([p[:, 0], p[:, -1], p[:, 1:-1, 0], p[:, 1:-1, -1]], dim=1)
        return torch.mode(_nearest(border), dim=1).values
    names = [background] * n if isinstance(background, str) else list(background)
    if len(names) != n:
        raise ParameterError(f"parameter background has {len(names)} names: it must be one name or one per image "
                             f"({n})")
    return torch.tensor([COLOURS.index(check_choice("background", b, COLOURS)) for b in names], dtype=torch.long)


def decompose(images: torch.Tensor, background: str | Sequence[str] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Explain every pixel as a blend of the image's background and one other palette colour.

    Returns (background index (n,), glyph colour index (n, H, W), coverage (n, H, W) in [0, 1]); indices into
    COLOURS. A pixel p is matched to the colour c whose segment background -> c passes closest to p, and its coverage is
    where along that segment it lies. Why segments and not the nearest colour: an antialiased edge pixel half red, half
    blue is nearest to magenta, but it lies exactly on the blue -> red segment. `background` names the background
    colour(s) (one name or one per image); left out, it is read off the image border."""
    x = _as_batch(images)
    bg = _background_index(x, background)
    if len(x) > _CHUNK:  # the work tensors are (n, H, W, 8): bound the memory
        parts = [decompose(x[i:i + _CHUNK], [COLOURS[int(k)] for k in bg[i:i + _CHUNK]])
                 for i in range(0, len(x), _CHUNK)]
        return bg, torch.cat([q[1] for q in parts]), torch.cat([q[2] for q in parts])
    p = ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)  # (n, H, W, 3)
    bgc = _PALETTE_01[bg]  # (n, 3)
    d = _PALETTE_01[None] - bgc[:, None]  # (n, K, 3): from the background to each palette colour
    dd = (d**2).sum(-1)  # (n, K); zero for the background itself
    v = p - bgc[:, None, None]  # (n, H, W, 3)
    vd = torch.einsum("nhwc,nkc->nhwk", v, d)
    a = (vd / dd.clamp_min(1e-12)[:, None, None]).clamp(0, 1)
    residual = (v**2).sum(-1, keepdim=True) - 2 * a * vd + a**2 * dd[:, None, None]
    residual = residual.masked_fill((dd == 0)[:, None, None], float("inf"))
    colour = residual.argmin(-1)
    coverage = a.gather(-1, colour[..., None])[..., 0]
    return bg, colour, coverage


def colour_share(images: torch.Tensor, colour: str, mask: torch.Tensor | None = None,
                 background: str | Sequence[str] | None = None) -> torch.Tensor:
    """Per image, the share of glyph pixels whose colour is `colour` (float (n,), NaN where no glyph pixel is found).

    A measurable attribute for steering: 1 for a red glyph when `colour="red"`, 0 for a blue one, in between for a
    mixed one. Glyph pixels are those at least half covered (see `decompose`); `mask` (bool (n, H, W) or (H, W))
    restricts them further, e.g. to where the glyph should be; `background` gives the background colour(s) instead of
    reading them off the border."""
    colour = check_choice("colour", colour, COLOURS)
    _, index, coverage = decompose(images, background)
    glyph = coverage >= 0.5
    if mask is not None:
        glyph = glyph & torch.as_tensor(mask, dtype=torch.bool)
    hits = (glyph & (index == COLOURS.index(colour))).sum((1, 2)).float()
    total = glyph.sum((1, 2)).float()
    return torch.where(total > 0, hits / total.clamp_min(1), torch.full_like(total, float("nan")))


def glyph_colours(images: torch.Tensor, background: str | Sequence[str] | None = None) -> list[str | None]:
    """Per image, the palette colour of most glyph pixels (None where no glyph pixel is found): a colour classifier
    for generated images, e.g. to check that "a red letter ..." came out red."""
    _, index, coverage = decompose(images, background)
    return _majority_colours(index, coverage >= 0.5)


def _majority_colours(index: torch.Tensor, glyph: torch.Tensor) -> list[str | None]:
    counts = torch.stack([(glyph & (index == k)).sum((1, 2)) for k in range(len(COLOURS))], dim=1)
    return [COLOURS[int(k)] if int(c) > 0 else None for k, c in zip(counts.argmax(1), counts.max(1).values)]


def background_colours(images: torch.Tensor) -> list[str]:
    """Per image, the palette colour of most border pixels: the background as `decompose` reads it."""
    return [COLOURS[int(i)] for i in _background_index(_as_batch(images), None)]


def _span(hit: torch.Tensor) -> torch.Tensor:
    """(n, S) bool, which rows (or columns) hold a glyph pixel -> (n,) how many rows lie from the first to the last."""
    first, last = hit.int().argmax(1), hit.shape[1] - 1 - hit.flip(1).int().argmax(1)
    return torch.where(hit.any(1), last - first + 1, 0)


def caption_agreement(images: torch.Tensor, attributes: pd.DataFrame) -> pd.DataFrame:
    """Per image, whether what it shows agrees with what its caption (one row of `attributes`) says, read back by
    the measurements above: positive evidence that a text-to-image model *follows* a caption it did not copy.

    Columns (bool): "background" (the border's palette colour is the caption's background), "glyph colour" (most
    glyph pixels have the caption's colour), "size" (large when the glyph pixels span more than half the image plus
    the shift jitter), "position" (the centroid of the glyph pixels is nearest to the centre of the caption's box:
    one of the four quadrants or the middle; a large glyph's box is the middle) and "all" (the four together). An
    image that ignores its caption agrees by chance: about 1/8, 1/7, 1/2 and 0.4 (measure it with the same images
    scored against shuffled captions)."""
    x = _as_batch(images)
    if len(attributes) != len(x):
        raise ParameterError(f"parameter attributes has {len(attributes)} rows: it must have one per image ({len(x)})")
    size = int(x.shape[-1])
    backgrounds = background_colours(x)
    _, index, coverage = decompose(x, backgrounds)
    glyph = coverage >= 0.5
    large = torch.maximum(_span(glyph.any(2)), _span(glyph.any(1))) > size // 2 + 2 * max(1, size // 16)
    grid = torch.arange(size) + 0.5
    ink = glyph.float().sum((1, 2)).clamp_min(1)
    centroid = torch.stack([(glyph.sum(2) * grid).sum(1) / ink, (glyph.sum(1) * grid).sum(1) / ink], 1)  # (row, col)
    centres = torch.tensor([[r + size / 4, c + size / 4] for r, c in (_box_offset("small", p, size) for p in POSITIONS)])
    nearest = torch.cdist(centroid, centres).argmin(1)
    wanted = [POSITIONS.index("center" if s == "large" else p) for s, p in zip(attributes["size"], attributes["position"])]
    out = pd.DataFrame({"background": [b == c for b, c in zip(backgrounds, attributes["background"])],
                        "glyph colour": [g == c for g, c in zip(_majority_colours(index, glyph), attributes["colour"])],
                        "size": (large.numpy() == (attributes["size"] == "large").to_numpy()),
                        "position": (nearest.numpy() == np.array(wanted)) & glyph.any((1, 2)).numpy()})
    out["all"] = out.all(axis=1)
    return out
