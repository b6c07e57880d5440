"""Text-friendly RandAugment (PARSeq style: 3 ops, each applied with p=0.5 at magnitude 5), with
Gaussian blur and Poisson noise in numpy/PIL (no imgaug). Every draw comes from the given rng."""
from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

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


OPS = {
    "AutoContrast": lambda img, m, rng: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, rng: ImageOps.equalize(img),
    "Invert": lambda img, m, rng: ImageOps.invert(img),
    "Rotate": _rotate,
    "Posterize": lambda img, m, rng: ImageOps.posterize(img, 4),
    "Solarize": lambda img, m, rng: ImageOps.solarize(img, 128),
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
