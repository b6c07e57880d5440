"""The augmentation's point operations (numpy lookup tables) against PIL.ImageOps, pixel for pixel."""
import random

import numpy as np
import pytest
from PIL import Image, ImageOps

from openrec.data.augment import OPS, TextRandAugment

REFERENCE = {
    "AutoContrast": ImageOps.autocontrast,
    "Equalize": ImageOps.equalize,
    "Invert": ImageOps.invert,
    "Posterize": lambda img: ImageOps.posterize(img, 4),
    "Solarize": lambda img: ImageOps.solarize(img, 128),
}


def images():
    """Word-sized crops with the histograms that take each branch of the reference: full range,
    narrow ranges, a single level, two levels, mostly one level, and grey (mode L) images."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(20):
        h, w = int(rng.integers(8, 64)), int(rng.integers(8, 256))
        lo = int(rng.integers(0, 200))
        hi = int(rng.integers(lo, 256))
        out.append(rng.integers(lo, hi + 1, size=(h, w, 3), dtype=np.uint8))
    out.append(np.full((32, 100, 3), 77, np.uint8))                        # one level: identity
    two = np.zeros((32, 100, 3), np.uint8)
    two[:, 50:] = 255
    out.append(two)                                                        # two levels
    skewed = np.full((32, 128, 3), 200, np.uint8)
    skewed[0, :5] = (3, 250, 9)                                            # nearly all one level
    out.append(skewed)
    ramp = np.tile(np.arange(256, dtype=np.uint8), (3, 1))[..., None].repeat(3, -1)
    out.append(ramp)                                                       # every level once per row
    heavy_top = rng.integers(0, 256, size=(32, 128, 3), dtype=np.uint8)
    heavy_top[:, :100] = 255                                               # a large last bin
    out.append(heavy_top)
    images = [Image.fromarray(a) for a in out]
    images += [Image.fromarray(a[..., 0]) for a in out[:6] + out[20:]]     # grey
    return images


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_point_ops_equal_pil(name):
    for i, img in enumerate(images()):
        ours = OPS[name](img, 0.5, random.Random(0))
        ref = REFERENCE[name](img)
        assert ours.mode == ref.mode and ours.size == ref.size, (name, i)
        assert np.array_equal(np.asarray(ours), np.asarray(ref)), (name, i, img.mode)


def test_augment_is_a_function_of_its_rng():
    img = np.random.default_rng(1).integers(0, 256, size=(32, 100, 3), dtype=np.uint8)
    aug = TextRandAugment()
    a = [aug(img, random.Random(s)) for s in range(30)]
    b = [aug(img, random.Random(s)) for s in range(30)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len({x.tobytes() for x in a}) > 20  # the seeds pick different ops
