"""Data features of the real-text recipe: the ``repeat`` key of a dataset entry, the "scene" preset
of the synthetic engine and its effects (deterministic, bounded, doing what they claim)."""
import random

import numpy as np
import pytest

from openrec.config import ConfigError
from openrec.data import build_dataset, validate_section
from openrec.data.lmdb_writer import LMDBWriter
from openrec.data.sources import SynthSource
from openrec.data.synth import effects
from openrec.data.synth.style import PRESETS, SynthStyle
from openrec.text import build_charset, build_label_encoder

CHARSET = build_charset()
CHARS = "".join(CHARSET.characters)


def _lmdb(path, words):
    import cv2
    rng = np.random.default_rng(0)
    with LMDBWriter(str(path)) as w:
        for word in words:  # textured images, so that augmentations are visible
            ok, buf = cv2.imencode(".png", rng.integers(0, 256, (32, 32 * len(word), 3), dtype=np.uint8))
            w.add(buf.tobytes(), word, 32 * len(word), 32)
    return str(path)


def test_repeat_lists_a_source_several_times_with_own_augmentation(tmp_path):
    real = _lmdb(tmp_path / "real", ["ab", "cde", "fghi"])
    cfg = validate_section({"datasets": [{"type": "synth", "num_samples": 5, "seed": 1},
                                         {"type": "lmdb", "path": real, "repeat": 3}],
                            "batch_size": 4, "num_workers": 0, "augment": True}, "Train")
    ds = build_dataset(cfg, CHARSET, build_label_encoder({"name": "CTCLabelEncode"}, CHARSET), True, 0)
    assert len(ds) == 5 + 3 * 3
    idx, ratios = ds.epoch_items(0)
    assert sorted(idx.tolist()) == list(range(14))
    # virtual copies map back to the same record (same label) ...
    texts = [ds.locate(5 + k)[0].load(ds.locate(5 + k)[1], 0, random.Random(0))[1] for k in range(9)]
    assert texts == ["ab", "cde", "fghi"] * 3
    assert ratios[5:8].tolist() == ratios[8:11].tolist() == ratios[11:14].tolist()
    # ... and each copy draws its own augmentation from (seed, epoch, index)
    # (augmentation may leave one copy untouched, so look at all copies over a few epochs)
    differ = 0
    for epoch in range(4):
        for k in range(3):
            copies = [ds[(5 + k + 3 * r, 64, 32, epoch)] for r in range(3)]
            assert {c["text"] for c in copies} == {["ab", "cde", "fghi"][k]}
            differ += sum(not np.array_equal(copies[0]["image"], c["image"]) for c in copies[1:])
            assert np.array_equal(ds[(5 + k, 64, 32, epoch)]["image"], copies[0]["image"])  # reproducible
    assert differ >= 12


@pytest.mark.parametrize("bad", [0, -2, 1.5, "3", True])
def test_repeat_must_be_a_positive_integer(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"Train.datasets\[0\].*repeat"):
        validate_section({"datasets": [{"type": "synth", "num_samples": 2, "repeat": bad}]}, "Train")


def test_scene_preset_is_reproducible_and_differs_from_default():
    a = SynthSource(CHARS, 25, num_samples=12, seed=3, preset="scene")
    b = SynthSource(CHARS, 25, num_samples=12, seed=3, preset="scene")
    d = SynthSource(CHARS, 25, num_samples=12, seed=3, preset="default")
    assert a.texts(0) == d.texts(0)  # the scene preset changes rendering, not the text distribution
    same, differ = 0, 0
    for i in range(12):
        img_a, text_a = a.load(i, 0, random.Random(0))
        img_b, _ = b.load(i, 0, random.Random(5))
        img_d, _ = d.load(i, 0, random.Random(0))
        assert np.array_equal(img_a, img_b) and img_a.dtype == np.uint8 and img_a.shape[2] == 3
        differ += img_a.shape != img_d.shape or not np.array_equal(img_a, img_d)
    assert differ == 12


def test_font_cache_holds_every_face_and_size_and_never_changes_a_pixel():
    cached = SynthSource(CHARS, 25, num_samples=40, seed=4, preset="scene")
    uncached = SynthSource(CHARS, 25, num_samples=40, seed=4, preset="scene")
    low, high = cached.renderer.style.font_size
    assert cached.renderer.font_cache_size == min(16384, len(cached.fonts) * (high - low + 1))
    uncached.renderer.font_cache_size = 1  # every sample opens its face afresh
    for i in list(range(40)) + list(range(40)):  # the second pass renders from cached faces
        img_c, text_c = cached.load(i, 0, None)
        img_u, text_u = uncached.load(i, 0, None)
        assert text_c == text_u and np.array_equal(img_c, img_u), i
    assert len(uncached.renderer._font_cache) == 1 and len(cached.renderer._font_cache) > 1
    opens = cached.renderer.font_opens
    cached.load(0, 0, None)
    assert cached.renderer.font_opens == opens  # warm: no face opened
    cached.renderer.clear_font_cache()
    img_cold, _ = cached.load(0, 0, None)
    assert cached.renderer.font_opens > opens and np.array_equal(img_cold, cached.load(0, 0, None)[0])


def test_style_rejects_unknown_keys_and_values():
    with pytest.raises(KeyError, match="unknown synth style key 'p_blurr'"):
        SynthStyle.from_dict({"p_blurr": 0.1})
    with pytest.raises(KeyError, match="color_mode 'pastel'"):
        SynthStyle.from_dict({"color_mode": "pastel"})
    with pytest.raises(KeyError, match="text_mix needs 5 weights"):
        SynthStyle.from_dict({"text_mix": [1.0, 0.0]})
    for name, preset in PRESETS.items():
        SynthStyle.from_dict(dict(preset))  # every preset is valid


def test_natural_colours_lean_to_neutrals():
    rng = random.Random(0)
    cols = np.stack([effects.natural_color(rng) for _ in range(2000)]).astype(np.float64)
    assert cols.min() >= 0 and cols.max() <= 255
    chroma = cols.max(1) - cols.min(1)
    uniform = np.random.default_rng(0).integers(0, 256, (2000, 3))
    assert np.median(chroma) < 0.5 * np.median(uniform.max(1) - uniform.min(1))


def test_faux_bold_thickens_and_keeps_shape():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 19:21] = 255
    bold = effects.faux_bold(mask, font_size=40, rng=random.Random(0))
    assert bold.shape == mask.shape and (bold >= mask).all() and (bold > 0).sum() > 2 * (mask > 0).sum()


def test_lighting_field_is_smooth_and_near_one():
    field = effects.lighting_field(32, 100, random.Random(1))
    assert field.shape == (32, 100, 1) and 0.3 < field.min() <= field.max() < 1.7
    assert np.abs(np.diff(field[..., 0], axis=1)).max() < 0.1  # no edges


def test_motion_blur_keeps_mean_and_blurs():
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, ::4] = 255  # vertical stripes
    out = effects.motion_blur(img, random.Random(2))
    assert out.shape == img.shape and abs(float(out.mean()) - float(img.mean())) < 8
    assert out.astype(np.int32).std() < img.astype(np.int32).std()


def test_distractor_stays_outside_the_text_box():
    glyph = lambda ch: np.full((20, 12), 255, np.uint8)  # noqa: E731
    seen = 0
    for seed in range(40):
        out = effects.add_distractor((40, 120), (10, 30, 20, 100), random.Random(seed), glyph, "abc")
        if out is None:
            continue
        seen += 1
        assert out.shape == (40, 120) and out.any()
        assert not out[10:30, 20:100].any()
    assert seen > 20


@pytest.mark.parametrize("seed", range(6))  # both orientations (arched up, below the centre) come up
def test_arc_bends_the_line_and_keeps_its_order(seed):
    from openrec.data.synth.fonts import discover_fonts
    from openrec.data.synth.render import SynthRenderer
    renderer = SynthRenderer(discover_fonts(CHARS)[:1], SynthStyle.from_dict({"arc_degrees": [120, 120]}))
    h, w = 30, 300
    mask = np.zeros((h, w), np.uint8)
    mask[:, :40] = 255  # a block at the start of the line, a thinner one at its end
    mask[:, -20:] = 255
    bent = renderer._arc([mask, None], random.Random(seed))[0].astype(float)
    cols = bent.sum(axis=0)
    left, right = cols[: len(cols) // 2].sum(), cols[len(cols) // 2:].sum()
    assert left > 1.5 * right  # the start stays on the left: no mirrored line
    assert abs(bent.sum() - mask.sum()) < 0.1 * mask.sum()  # the arc keeps the line's length
    # the two ends of a 120-degree arc sit at different heights from its middle: rows of ink at the
    # left block's edge differ from the rows at the middle of the line (which is empty)
    ink_rows = np.nonzero(bent[:, : bent.shape[1] // 6].sum(axis=1))[0]
    assert bent.shape[0] > 2 * h and ink_rows.size and ink_rows.size < bent.shape[0]


def test_arc_probability_zero_draws_nothing():
    # presets without p_arc keep their samples exactly (p_arc = 0 consumes no random numbers)
    style = SynthStyle.from_dict(PRESETS["scene"])
    assert style.p_arc == 0.0
    a = SynthSource(CHARS, 25, num_samples=6, seed=3, preset="scene")
    b = SynthSource(CHARS, 25, num_samples=6, seed=3, preset="scene", style={"arc_degrees": [40, 60]})
    for i in range(6):
        assert np.array_equal(a.load(i, 0, random.Random(i))[0], b.load(i, 0, random.Random(i))[0])


@pytest.mark.parametrize("window", [(0, 7, 0, 9), (-3, 5, -2, 12), (2, 11, 4, 15), (-4, 12, -5, 14)])
def test_crop_equals_the_padded_slice(window):
    from openrec.data.synth.render import _crop
    mask = np.random.default_rng(0).integers(0, 256, size=(7, 9), dtype=np.uint8)
    y0, y1, x0, x1 = window
    pads = (max(0, -y0), max(0, y1 - 7), max(0, -x0), max(0, x1 - 9))
    expected = np.pad(mask, (pads[:2], pads[2:]))[y0 + pads[0]:y1 + pads[0], x0 + pads[2]:x1 + pads[2]]
    got = _crop(mask, y0, y1, x0, x1)
    assert got.dtype == mask.dtype and np.array_equal(got, expected)


def test_blend_paints_the_colour_by_coverage():
    from openrec.data.synth.render import _blend
    rng = np.random.default_rng(1)
    img = (rng.random((13, 37, 3)) * 255).astype(np.float32)
    alpha = rng.integers(0, 256, size=(13, 37), dtype=np.uint8)
    alpha[0, :3] = (0, 255, 128)  # each case below present
    color = np.array([12.5, 200.25, 99.0], np.float32)
    got = _blend(img, alpha, color)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[alpha == 0], img[alpha == 0])  # no coverage: the image
    np.testing.assert_allclose(got[alpha == 255], np.broadcast_to(color, img.shape)[alpha == 255], rtol=1e-6)
    half = alpha == 128
    np.testing.assert_allclose(got[half], (img[half] * 127 + color * 128) / 255, rtol=1e-5)
