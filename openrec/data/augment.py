"""Text-friendly RandAugment (PARSeq style: 3 ops, each applied with p=0.5 at magnitude 5), with
Gaussian blur and Poisson noise in numpy/PIL (no imgaug). Every draw comes from the given rng."""
from __future__ import annotations

import random

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

__all__ = ["TextRandAugment"]

FILL = (128, 128, 128)


def _sign(rng):
    return 1 if rng.random() < 0.5 else -1


def _affine(img, matrix, rng):
    return img.transform(img.size, Image.AFFINE, matrix, resample=rng.choice((Image.BILINEAR, Image.BICUBIC)), fillcolor=FILL)


def _rotate(img, m, rng):
    return img.rotate(_sign(rng) * 30 * m, resample=Image.BILINEAR, expand=True, fillcolor=FILL)


def _shear_x(img, m, rng):
    return _affine(img, (1, _sign(rng) * 0.9 * m, 0, 0, 1, 0), rng)


def _shear_y(img, m, rng):
    return _affine(img, (1, 0, 0, _sign(rng) * 0.2 * m, 1, 0), rng)


def _translate_x(img, m, rng):
    return _affine(img, (1, 0, _sign(rng) * 0.1 * m * img.width, 0, 1, 0), rng)


def _translate_y(img, m, rng):
    return _affine(img, (1, 0, 0, 0, 1, _sign(rng) * 0.3 * m * img.height), rng)


def _enhance(cls):
    return lambda img, m, rng: cls(img).enhance(1.0 + _sign(rng) * 0.9 * m)


def _solarize_add(img, m, rng):
    arr = np.asarray(img).astype(np.int16)
    add = int(110 * m)
    return Image.fromarray(np.where(arr < 128, np.clip(arr + add, 0, 255), arr).astype(np.uint8))


def _gaussian_blur(img, m, rng):
    radius = max(1, round(min(2.0, 0.02 * max(img.size))))
    return img.filter(ImageFilter.GaussianBlur(radius * rng.uniform(0.5, 1.0)))


def _poisson_noise(img, m, rng):
    lam = max(1, int(round(min(20.0, 0.2 * max(img.size)))) | 1)
    nrng = np.random.default_rng(rng.getrandbits(63))
    noise = nrng.poisson(lam, size=(img.height, img.width, 1)) * nrng.choice((-1, 1), size=(img.height, img.width, 1))
    return Image.fromarray(np.clip(np.asarray(img).astype(np.int16) + noise, 0, 255).astype(np.uint8))


# The point operations as lookup tables applied by OpenCV: the same pixels as PIL.ImageOps
# (tests/test_augment.py compares them), without its Python loops over 256 levels per band and the
# rounding of every table entry in Image.point: 60-250 us a call before, ~35-60 us now (perf note 69).
_LEVELS = np.arange(256)
_INVERT = (255 - _LEVELS).astype(np.uint8)
_POSTERIZE4 = (_LEVELS & ~15).astype(np.uint8)
_SOLARIZE128 = np.where(_LEVELS < 128, _LEVELS, 255 - _LEVELS).astype(np.uint8)


def _apply_luts(arr: np.ndarray, luts: np.ndarray) -> Image.Image:
    """arr (H, W) or (H, W, bands) uint8; luts (256,) for every band or (bands, 256), uint8."""
    if luts.ndim == 1:
        return Image.fromarray(cv2.LUT(arr, luts))
    return Image.fromarray(cv2.LUT(arr, np.ascontiguousarray(luts.T).reshape(256, 1, len(luts))))


def _histograms(arr: np.ndarray) -> np.ndarray:
    """(bands, 256) pixel counts per level."""
    bands = 1 if arr.ndim == 2 else arr.shape[2]
    return np.stack([cv2.calcHist([arr], [b], None, [256], [0, 256]).ravel() for b in range(bands)]).astype(np.int64)


def _lowest_highest(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per band, the lowest and the highest level present (0 and 255 where none is: hi <= lo then)."""
    present = hist > 0
    return present.argmax(1), 255 - present[:, ::-1].argmax(1)


def _autocontrast_luts(hist: np.ndarray) -> np.ndarray:
    """ImageOps.autocontrast's tables (no cutoff): the darkest level present to 0, the lightest to 255;
    the identity where fewer than two levels are present."""
    lo, hi = _lowest_highest(hist)
    stretch = hi > lo
    scale = 255.0 / np.where(stretch, hi - lo, 1)[:, None]
    # float64 arithmetic in PIL's order (ix * scale + offset), truncated toward zero like int()
    stretched = np.clip(np.trunc(_LEVELS * scale + (-lo[:, None] * scale)), 0, 255)
    return np.where(stretch[:, None], stretched, _LEVELS).astype(np.uint8)


def _equalize_luts(hist: np.ndarray) -> np.ndarray:
    """ImageOps.equalize's tables: levels spread by the cumulative histogram; the identity where one
    level or none is present, or where all but the top level hold fewer than 255 pixels."""
    _, hi = _lowest_highest(hist)
    total = hist.sum(1)
    step = (total - hist[np.arange(len(hist)), hi]) // 255
    spread = ((hist > 0).sum(1) > 1) & (step > 0)
    below = np.cumsum(hist, axis=1) - hist  # pixels under each level
    step = np.maximum(step, 1)[:, None]
    equalized = np.clip((step // 2 + below) // step, 0, 255)
    return np.where(spread[:, None], equalized, _LEVELS).astype(np.uint8)


def _autocontrast(img, m, rng):
    arr = np.asarray(img)
    return _apply_luts(arr, _autocontrast_luts(_histograms(arr)))


def _equalize(img, m, rng):
    arr = np.asarray(img)
    return _apply_luts(arr, _equalize_luts(_histograms(arr)))


def _fixed_lut(lut: np.ndarray):
    return lambda img, m, rng: _apply_luts(np.asarray(img), lut)


OPS = {
    "AutoContrast": _autocontrast,
    "Equalize": _equalize,
    "Invert": _fixed_lut(_INVERT),
    "Rotate": _rotate,
    "Posterize": _fixed_lut(_POSTERIZE4),
    "Solarize": _fixed_lut(_SOLARIZE128),
    "SolarizeAdd": _solarize_add,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "GaussianBlur": _gaussian_blur,
    "PoissonNoise": _poisson_noise,
}


class TextRandAugment:
    """Picks ``num_ops`` distinct ops; each fires with probability ``prob`` at ``magnitude``/10."""

    def __init__(self, num_ops: int = 3, magnitude: int = 5, prob: float = 0.5, ops: tuple[str, ...] | None = None):
        self.ops = list(ops or OPS)
        unknown = [o for o in self.ops if o not in OPS]
        if unknown:
            raise KeyError(f"unknown augmentation ops {unknown} (accepted: {', '.join(OPS)})")
        self.num_ops = num_ops
        self.magnitude = magnitude / 10.0
        self.prob = prob

    def __call__(self, img: np.ndarray, rng: random.Random) -> np.ndarray:
        pil = Image.fromarray(img)
        for name in rng.sample(self.ops, self.num_ops):
            if rng.random() < self.prob:
                pil = OPS[name](pil, self.magnitude, rng)
        return np.asarray(pil.convert("RGB"))
