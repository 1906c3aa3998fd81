import re

import numpy as np
import pandas as pd
import pytest
import torch

from replib.data import glyphs
from replib.data.glyphs import (
    ATTRIBUTE_COLUMNS,
    CAPTION_COLUMNS,
    COLOURS,
    FONTS,
    NUISANCE_COLUMNS,
    PALETTE,
    GlyphSet,
    background_colours,
    caption,
    colour_share,
    decompose,
    glyph_colours,
    holdout_split,
    make_glyph_set,
    render,
    render_many,
    with_duplicates,
)
from replib.params import ParameterError

CAPTION = re.compile(r"a (\w+) (letter|digit) (\w) on a (\w+) background, (small|large), ([a-z ]+?)"
                     r"(?:, (tilted left|tilted right))?$")


@pytest.fixture(scope="module")
def gset() -> GlyphSet:
    return make_glyph_set(400, size=16, seed=3)


def test_shapes_range_and_columns(gset):
    assert len(gset) == 400 and gset.images.shape == (400, 3, 16, 16) and gset.images.dtype == torch.float32
    assert float(gset.images.min()) == -1.0 and float(gset.images.max()) == 1.0
    assert len(gset.captions) == 400 and tuple(gset.attributes.columns) == ATTRIBUTE_COLUMNS
    assert len(gset.attributes) == 400 and gset.image_size == 16
    a = gset.attributes
    assert set(a["kind"]) == {"letter", "digit"}
    assert (a["kind"] == np.where(a["char"].str.isdigit(), "digit", "letter")).all()
    assert set(a["position"][a["size"] == "large"]) == {"center"}  # large glyphs fill the image: middle only
    assert set(a["position"][a["size"] == "small"]) == set(glyphs.POSITIONS)
    assert set(a["rotation"]) == set(glyphs.ROTATIONS)
    assert ATTRIBUTE_COLUMNS == CAPTION_COLUMNS + NUISANCE_COLUMNS == CAPTION_COLUMNS + ("font", "dx", "dy")
    assert set(a["font"]) == set(FONTS) == {"sans", "serif", "mono"}
    for c in ("dx", "dy"):  # +-1 px at 16x16
        assert a[c].dtype == np.int64 and set(a[c]) == {-1, 0, 1}
    big = make_glyph_set(20, size=32, seed=0)
    assert big.images.shape == (20, 3, 32, 32) and big.image_size == 32
    assert float(big.images.min()) >= -1.0 and float(big.images.max()) <= 1.0


def test_same_seed_same_set_other_seed_differs(gset):
    again = make_glyph_set(400, size=16, seed=3)
    assert torch.equal(gset.images, again.images) and gset.captions == again.captions
    pd.testing.assert_frame_equal(gset.attributes, again.attributes)
    other = make_glyph_set(400, size=16, seed=4)
    assert not torch.equal(gset.images, other.images) and gset.captions != other.captions


def test_captions_spell_out_the_attributes(gset):
    assert caption(dict(char="K", colour="red", background="blue", size="small", position="top left",
                        rotation=0)) == "a red letter K on a blue background, small, top left"
    assert caption(dict(char="7", colour="white", background="black", size="large", position="center",
                        rotation=15)) == "a white digit 7 on a black background, large, center, tilted left"
    for text, row in zip(gset.captions, gset.attributes.to_dict("records")):
        m = CAPTION.fullmatch(text)
        assert m, text
        colour, kind, char, background, size, position, tilt = m.groups()
        assert (colour, kind, char, background, size, position) == (
            row["colour"], row["kind"], row["char"], row["background"], row["size"], row["position"])
        assert (tilt or "") == glyphs.ROTATION_WORDS[row["rotation"]]


def test_glyph_colour_differs_from_background_and_is_drawn(gset):
    a = gset.attributes
    assert (a["colour"] != a["background"]).all()
    assert set(a["colour"]) == set(COLOURS) and set(a["background"]) == set(COLOURS)
    mask = glyph_mask(gset.images, list(a["background"]))
    assert (mask.sum((1, 2)) >= 4).all()  # every image shows its glyph
    for i in range(20):  # the image holds exactly its two palette colours where fully (un)covered
        img = (gset.images[i] + 1) / 2
        fg, bg = torch.tensor(PALETTE[a["colour"][i]]), torch.tensor(PALETTE[a["background"][i]])
        assert (img[:, 0, 0] == bg).all()
        assert ((img.permute(1, 2, 0) - fg).abs().sum(-1) < 1e-6).any()


def test_layout_keeps_small_glyphs_in_their_box_and_holes_open():
    def covered(**kw):
        row = dict(char="B", colour="white", background="black", size="small", rotation=0) | kw
        return glyph_mask(render(row, 16)[None], "black")[0]

    quadrant = {"top left": (slice(0, 8), slice(0, 8)), "top right": (slice(0, 8), slice(8, 16)),
                "bottom left": (slice(8, 16), slice(0, 8)), "bottom right": (slice(8, 16), slice(8, 16)),
                "center": (slice(4, 12), slice(4, 12))}
    for position, (rows, cols) in quadrant.items():
        m = covered(position=position, rotation=15)
        inside = torch.zeros_like(m)
        inside[rows, cols] = True
        assert m.any() and not (m & ~inside).any(), position
    o = render(dict(char="O", colour="white", background="black", size="large", position="center", rotation=0), 32)
    assert torch.equal(o[:, 16, 16], torch.full((3,), -1.0))  # the hole of the O stays background
    assert float(o[0, 16, 3:8].max()) == 1.0  # and its left stroke is drawn


def test_render_reproduces_the_set_and_subset_keeps_alignment(gset):
    for i in (0, 7, 123):
        assert torch.equal(render(gset.attributes.iloc[i], 16), gset.images[i])
        assert torch.equal(render(gset.attributes.iloc[i].to_dict(), 16), gset.images[i])
    assert torch.equal(render_many(gset.attributes, 16), gset.images)
    shifted = (gset.attributes["dx"] != 0) | (gset.attributes["dy"] != 0)
    assert shifted.sum() > 100  # the nuisances are in the rows, so render sees them
    big = make_glyph_set(200, size=32, seed=1)
    assert set(big.attributes["dx"]) == set(big.attributes["dy"]) == {-2, -1, 0, 1, 2}  # +-2 px at 32x32
    assert torch.equal(render_many(big.attributes, 32), big.images)
    assert torch.equal(render(big.attributes.iloc[17], 32), big.images[17])
    sub = gset.subset([5, 2, 9])
    assert len(sub) == 3 and sub.captions == [gset.captions[i] for i in (5, 2, 9)]
    assert torch.equal(sub.images, gset.images[[5, 2, 9]]) and list(sub.attributes.index) == [0, 1, 2]
    assert sub.attributes.iloc[1].to_dict() == gset.attributes.iloc[2].to_dict()
    red = torch.tensor((gset.attributes["colour"] == "red").to_numpy())
    reds = gset.subset(red)
    assert len(reds) == int(red.sum()) > 0 and set(reds.attributes["colour"]) == {"red"}
    assert gset.subset(slice(10, 20)).captions == gset.captions[10:20]


def test_colour_share_measures_the_glyph_colour(gset):
    a = gset.attributes
    own = torch.stack([colour_share(gset.images[i], c)[0] for i, c in enumerate(a["colour"][:60])])
    assert torch.allclose(own, torch.ones(60))
    for name in ("red", "blue"):
        share = colour_share(gset.images, name)
        is_it = torch.tensor((a["colour"] == name).to_numpy())
        assert torch.allclose(share[is_it], torch.ones(int(is_it.sum())))
        assert float(share[~is_it].abs().max()) == 0.0
    # robust to mild noise, and a given background gives the same answer as the one read off the border
    noise = torch.randn(gset.images.shape, generator=torch.Generator().manual_seed(0))
    noisy = (gset.images + 0.1 * noise).clamp(-1, 1)
    own_noisy = torch.stack([colour_share(noisy[i], c)[0] for i, c in enumerate(a["colour"][:60])])
    assert float(own_noisy.mean()) > 0.95
    assert torch.equal(colour_share(gset.images, "red", background=list(a["background"])),
                       colour_share(gset.images, "red"))
    assert background_colours(gset.images) == list(a["background"])
    assert glyph_colours(gset.images) == list(a["colour"])
    many = torch.cat([gset.images] * 3)  # more images than one chunk of the measurement: same answers
    assert torch.equal(colour_share(many, "green"), colour_share(gset.images, "green").repeat(3))
    # a mask restricts the pixels; an image with no glyph pixel gives NaN
    half = torch.zeros(16, 16, dtype=torch.bool)
    half[:, :8] = True
    assert torch.equal(colour_share(gset.images[:5], "red", mask=half).isnan(),
                       ~(glyph_mask(gset.images[:5]) & half).any((1, 2)))
    blank = torch.full((2, 3, 16, 16), -1.0)
    assert colour_share(blank, "red").isnan().all() and glyph_colours(blank) == [None, None]


def test_one_caption_admits_many_images():
    """The nuisances (font, shift) vary per image and are not in the caption: one caption, many images."""
    one = dict(alphabet="R", colours=["red"], backgrounds=["blue"], sizes=["large"], rotations=[0])
    s = make_glyph_set(200, size=16, seed=0, **one)
    assert set(s.captions) == {"a red letter R on a blue background, large, center"}
    distinct = torch.unique(s.images.flatten(1), dim=0)
    assert len(distinct) >= 12  # up to 3 fonts x 3 x 3 shifts
    assert set(s.attributes["font"]) == set(FONTS)
    other = make_glyph_set(200, size=16, seed=1, **one)  # and across draws: the same caption, other images
    assert other.captions == s.captions and not torch.equal(other.images, s.images)
    # the fonts draw different shapes, the shifts move them
    row = s.attributes.iloc[0].to_dict() | dict(dx=0, dy=0)
    by_font = [render(row | dict(font=f), 16) for f in FONTS]
    assert all(not torch.equal(by_font[i], by_font[j]) for i in range(3) for j in range(i + 1, 3))
    moved = render(row | dict(font="sans", dx=1), 16)
    assert torch.equal(moved[:, :, 1:], by_font[0][:, :, :-1]) and (moved[:, :, 0] == by_font[0][:, :, 0]).all()
    # in a default set, images that share a caption differ
    d = make_glyph_set(3000, size=16, seed=2, alphabet="AB", colours=["red", "blue"], backgrounds=["red", "blue"])
    groups = d.attributes.groupby(pd.Series(d.captions)).indices
    pairs = [(int(ix[0]), int(ix[1])) for ix in groups.values() if len(ix) > 1]
    assert len(pairs) > 20
    assert sum(not torch.equal(d.images[i], d.images[j]) for i, j in pairs) > 0.8 * len(pairs)


def test_shifts_never_push_the_glyph_out_of_the_image():
    for size in (16, 32):
        s = make_glyph_set(400, size=size, seed=7)
        a = s.attributes
        j = max(1, size // 16)
        assert a["dx"].abs().max() == a["dy"].abs().max() == j
        still = render_many(a.assign(dx=0, dy=0), size)
        bg = torch.tensor([PALETTE[b] for b in a["background"]])[:, :, None, None] * 2 - 1
        ink = lambda x: (x - bg).abs().sum((1, 2, 3))  # noqa: E731  glyph coverage summed over the image
        assert torch.allclose(ink(s.images), ink(still), rtol=1e-5, atol=1e-4)  # nothing was cut off
        assert not torch.equal(s.images, still)
        assert glyph_colours(s.images) == list(a["colour"]) and background_colours(s.images) == list(a["background"])
    # small glyphs stay within their box grown by j pixels
    quadrant = {"top left": (0, 0), "top right": (0, 8), "bottom left": (8, 0), "bottom right": (8, 8),
                "center": (4, 4)}
    for position, (r, c) in quadrant.items():
        lo_x, hi_x, lo_y, hi_y = glyphs._coverage("W", "serif", "small", 15, position, 16)[1]
        for dx, dy in ((-1, -1), (1, 1), (1, -1)):  # clipped as make_glyph_set clips them
            row = dict(char="W", colour="white", background="black", size="small", position=position,
                       rotation=15, font="serif", dx=min(max(dx, lo_x), hi_x), dy=min(max(dy, lo_y), hi_y))
            m = glyph_mask(render(row, 16)[None], "black")[0]
            inside = torch.zeros_like(m)
            inside[max(0, r - 1):r + 9, max(0, c - 1):c + 9] = True
            assert m.any() and not (m & ~inside).any(), (position, dx, dy)


def test_no_jitter_and_one_font_give_the_old_images():
    """jitter=0 and fonts=("sans",): the caption determines the image again, as before the nuisances existed."""
    plain = make_glyph_set(500, size=16, seed=3, jitter=0, fonts=("sans",))
    a = plain.attributes
    assert set(a["font"]) == {"sans"} and set(a["dx"]) == set(a["dy"]) == {0}
    old_style = a[list(CAPTION_COLUMNS)]  # rows without nuisance columns: sans, unshifted
    assert torch.equal(render_many(old_style, 16), plain.images)
    assert torch.equal(render(old_style.iloc[4], 16), plain.images[4])
    default = make_glyph_set(500, size=16, seed=3)  # the nuisances are drawn last: same captions, other images
    assert default.captions == plain.captions
    pd.testing.assert_frame_equal(default.attributes[list(CAPTION_COLUMNS)], old_style)
    assert not torch.equal(default.images, plain.images)
    by_caption = {}
    for text, image in zip(plain.captions, plain.images):  # one caption, one image
        assert torch.equal(by_caption.setdefault(text, image), image)
    assert set(make_glyph_set(50, seed=0, jitter=0).attributes["dx"]) == {0}
    assert set(make_glyph_set(50, seed=0, fonts="mono").attributes["font"]) == {"mono"}


def test_holdout_split_keeps_held_out_captions_unseen():
    s = make_glyph_set(3000, size=16, seed=0, alphabet="ABC", colours=["red", "green", "blue"],
                       backgrounds=["black", "white"])
    train, held = holdout_split(s, 0.2, seed=0)
    assert train.dtype == held.dtype == np.int64
    assert (np.diff(train) > 0).all() and (np.diff(held) > 0).all()
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(len(s)))
    train_caps, held_caps = {s.captions[i] for i in train}, {s.captions[i] for i in held}
    assert not train_caps & held_caps
    distinct = len(set(s.captions))
    assert len(held_caps) == round(0.2 * distinct) and len(train_caps) == distinct - len(held_caps)
    assert 0.1 < len(held) / len(s) < 0.3
    again = holdout_split(s, 0.2, seed=0)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], held)
    assert not np.array_equal(holdout_split(s, 0.2, seed=1)[1], held)
    sub = s.subset(held)  # usable directly with GlyphSet.subset
    assert set(sub.captions) == held_caps
    tiny = make_glyph_set(10, seed=0, alphabet="AB", colours=["red"], backgrounds=["blue"], sizes=["large"],
                          rotations=[0])
    t, h = holdout_split(tiny, 0.01, seed=0)  # at least one caption is held out, at least one kept
    assert len({tiny.captions[i] for i in h}) == 1 and len(t) > 0
    for bad in (0.0, 1.0, -0.5, "half"):
        with pytest.raises(ParameterError, match="parameter frac"):
            holdout_split(s, bad, seed=0)
    with pytest.raises(ParameterError, match="parameter seed"):
        holdout_split(s, 0.2, seed=-1)
    single = make_glyph_set(5, seed=0, alphabet="A", colours=["red"], backgrounds=["blue"], sizes=["large"],
                            rotations=[0])
    with pytest.raises(ParameterError, match="parameter glyphs.*at least 2"):
        holdout_split(single, 0.5, seed=0)
    with pytest.raises(ParameterError, match="parameter glyphs"):
        holdout_split(s.images, 0.5, seed=0)


def test_restricted_choices_are_honoured():
    s = make_glyph_set(60, alphabet="AB12", colours=["red"], backgrounds=("black", "white"), sizes="large",
                       rotations=[0])
    a = s.attributes
    assert set(a["char"]) <= set("AB12") and set(a["colour"]) == {"red"} and set(a["size"]) == {"large"}
    assert set(a["background"]) == {"black", "white"} and set(a["rotation"]) == {0}
    assert all(c.endswith(", large, center") for c in s.captions)
    s = make_glyph_set(30, sizes=["small"], positions=["top left", "bottom right"])
    assert set(s.attributes["position"]) == {"top left", "bottom right"}


@pytest.mark.parametrize("kwargs, name", [
    (dict(n=0), "n"),
    (dict(n=5, size=20), "size"),
    (dict(n=5, seed=-1), "seed"),
    (dict(n=5, alphabet="AB!"), "alphabet"),
    (dict(n=5, alphabet=""), "alphabet"),
    (dict(n=5, colours=["red", "pink"]), "colours"),
    (dict(n=5, backgrounds=[]), "backgrounds"),
    (dict(n=5, colours=["red"], backgrounds=["red"]), "backgrounds"),
    (dict(n=5, sizes=["huge"]), "sizes"),
    (dict(n=5, positions=["middle"]), "positions"),
    (dict(n=5, sizes=["large"], positions=["top left"]), "positions"),
    (dict(n=5, rotations=[30]), "rotations"),
    (dict(n=5, fonts=["comic"]), "fonts"),
    (dict(n=5, fonts=[]), "fonts"),
    (dict(n=5, jitter=-1), "jitter"),
    (dict(n=5, size=16, jitter=5), "jitter"),
    (dict(n=5, jitter=0.5), "jitter"),
])
def test_bad_parameters_name_themselves(kwargs, name):
    with pytest.raises(ParameterError, match=rf"parameter {name}\b") as err:
        make_glyph_set(**kwargs)
    assert "must" in str(err.value)


def test_bad_render_and_measure_arguments():
    row = dict(char="A", colour="red", background="blue", size="large", position="center", rotation=0)
    with pytest.raises(ParameterError, match="parameter position .*'center'"):
        render(row | dict(position="top left"))
    with pytest.raises(ParameterError, match="parameter background"):
        render(row | dict(background="red"))
    with pytest.raises(ParameterError, match="parameter colour=.*'red'"):
        render(row | dict(colour="purple"))
    with pytest.raises(ParameterError, match="parameter char"):
        render(row | dict(char="AB"))
    with pytest.raises(ParameterError, match="parameter font=.*'serif'"):
        render(row | dict(font="Arial"))
    with pytest.raises(ParameterError, match=r"parameter dx=3 .*inside the image"):
        render(row | dict(dx=3))  # a large glyph at 16x16 has at most a pixel or two to spare
    with pytest.raises(ParameterError, match=r"parameter dy=-9 .*inside the image"):
        render(row | dict(size="small", position="top left", dy=-9))
    with pytest.raises(ParameterError, match="parameter dx"):
        render(row | dict(dx=0.5))
    with pytest.raises(ParameterError, match="parameter colour="):
        colour_share(render(row)[None], "purple")
    with pytest.raises(ParameterError, match="parameter images"):
        colour_share(torch.zeros(2, 1, 16, 16), "red")


def test_with_duplicates_repeats_the_first_pairs():
    base = make_glyph_set(12, 16, seed=3)
    train, is_dup = with_duplicates(base, 3, 5)
    assert len(train) == 12 + 3 * 4 and is_dup.tolist() == [True] * 3 + [False] * 9
    for i in range(12):
        rows = [j for j, c in enumerate(train.captions) if c == base.captions[i]]
        assert len(rows) == (5 if i < 3 else 1)
        assert all(torch.equal(train.images[j], base.images[i]) for j in rows)
    with pytest.raises(ParameterError, match="n_duplicated"):
        with_duplicates(base, 13, 5)


@pytest.mark.parametrize("size", [16, 32])
def test_caption_agreement_reads_the_caption_back_and_fails_at_chance(size):
    """Rendered images agree with their own captions; the same images against shuffled captions, and noise, agree
    only by chance: the measure fails for a model that ignores the caption."""
    s = make_glyph_set(1000, size=size, seed=3)
    own = glyphs.caption_agreement(s.images, s.attributes)
    assert list(own.columns) == ["background", "glyph colour", "size", "position", "all"]
    assert own[["background", "glyph colour", "size"]].all().all() and own["all"].mean() >= 0.99
    shuffled = s.attributes.iloc[np.random.default_rng(0).permutation(len(s))].reset_index(drop=True)
    other = glyphs.caption_agreement(s.images, shuffled).mean()
    noise = torch.rand(s.images.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    random = glyphs.caption_agreement(noise, s.attributes).mean()
    for chance in (other, random):
        assert chance["background"] < 0.2 and chance["glyph colour"] < 0.2 and chance["all"] < 0.05
    with pytest.raises(ParameterError, match="attributes"):
        glyphs.caption_agreement(s.images[:3], s.attributes)


def test_off_palette_is_near_zero_for_rendered_glyphs_and_grows_with_blotches():
    images = glyphs.make_glyph_set(16, 16, seed=0).images
    clean = glyphs.off_palette(images)
    blotchy = glyphs.off_palette((images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1))
    assert clean.shape == (16,) and clean.max() < 0.1  # antialiased edges only
    assert (blotchy > clean + 0.05).all()


def glyph_mask(images, background=None):
    """The pixels at least half covered by the glyph (`decompose`'s coverage)."""
    return decompose(images, background)[2] >= 0.5
