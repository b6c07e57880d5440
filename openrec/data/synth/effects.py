"""Effects of the synthetic engine that bring it closer to real word crops: natural colours, faux
bold, uneven lighting, motion blur and clutter at the crop edges. Pure functions of a ``random.Random``."""
from __future__ import annotations

import colorsys
import random
from typing import Callable

import cv2
import numpy as np

__all__ = ["natural_color", "faux_bold", "lighting_field", "motion_blur", "add_distractor"]


def natural_color(rng: random.Random) -> np.ndarray:
    """An RGB colour as found on signs and printed text: light or dark neutrals a good part of the
    time, otherwise a colour of mostly moderate saturation (uniform RGB is far too saturated)."""
    r = rng.random()
    if r < 0.3:
        h, s, v = rng.random(), rng.uniform(0.0, 0.12), rng.uniform(0.75, 1.0)
    elif r < 0.55:
        h, s, v = rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.02, 0.3)
    else:
        h, s, v = rng.random(), rng.betavariate(1.2, 2.0), rng.uniform(0.2, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


def faux_bold(mask: np.ndarray, font_size: int, rng: random.Random) -> np.ndarray:
    """Thicker strokes: dilate a glyph mask by about 1/14 of the font size."""
    k = max(2, int(round(font_size / 14 * rng.uniform(0.7, 1.3))))
    return cv2.dilate(mask, np.ones((k, k), np.uint8))


def lighting_field(h: int, w: int, rng: random.Random) -> np.ndarray:
    """A smooth multiplicative field (h, w, 1) around 1: a linear ramp in a random direction or a spot."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    strength = rng.uniform(0.15, 0.5)
    if rng.random() < 0.6:
        theta = rng.uniform(0, 2 * np.pi)
        ramp = (xx - w / 2) * np.cos(theta) / max(w, 1) + (yy - h / 2) * np.sin(theta) / max(h, 1)
        field = 1.0 + strength * ramp / max(float(np.abs(ramp).max()), 1e-6)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        sigma = rng.uniform(0.3, 1.0) * max(h, w) / 2
        spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
        field = 1.0 + strength * (spot if rng.random() < 0.5 else -spot)
    return field[..., None]


def motion_blur(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Blur along a line of 3-7 pixels at a random angle (camera or object motion)."""
    k = rng.choice((3, 5, 7))
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    return cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6))


def add_distractor(shape: tuple[int, int], text_box: tuple[int, int, int, int], rng: random.Random,
                   glyph_mask: Callable[[str], np.ndarray], characters: str) -> np.ndarray | None:
    """A uint8 mask (h, w) of clutter outside the text box (y0, y1, x0, x1): a border line above or
    below the text, or the cut-off part of a neighbouring glyph at the left or right edge. None when
    the margins leave no room."""
    h, w = shape
    y0, y1, x0, x1 = text_box
    out = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:  # a line in the top or bottom margin
        room = (0, y0) if rng.random() < 0.5 else (y1, h)
        if room[1] - room[0] < 2:
            return None
        thick = rng.randint(1, max(1, (room[1] - room[0]) // 3))
        y = rng.randint(room[0], room[1] - thick)
        xa, xb = (0, w) if rng.random() < 0.6 else sorted(rng.sample(range(w + 1), 2))
        out[y:y + thick, xa:xb] = 255
        return out
    side = rng.choice(("left", "right"))
    room = x0 if side == "left" else w - x1
    if room < 3:
        return None
    glyph = glyph_mask(rng.choice(characters))
    ys, xs = np.nonzero(glyph > 16)
    if len(ys) == 0:
        return None
    glyph = glyph[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    gh = max(1, y1 - y0)
    glyph = cv2.resize(glyph, (max(1, int(glyph.shape[1] * gh / glyph.shape[0])), gh))
    visible = min(room - 1, max(1, int(glyph.shape[1] * rng.uniform(0.15, 0.5))))
    part = glyph[:, -visible:] if side == "left" else glyph[:, :visible]
    xa = 0 if side == "left" else w - visible
    out[y0:y0 + gh, xa:xa + visible] = part[: h - y0]
    return out
