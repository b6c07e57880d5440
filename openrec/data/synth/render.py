"""Synthetic word-image renderer (PIL for glyphs, OpenCV/numpy for geometry and degradations).

Per sample: font and size, optional character spacing and stroke, optional curved baseline (arc or
sine), rotation and perspective, a background (flat, gradient, noise or texture), a text colour with
a minimum contrast, an optional shadow, then blur, low resolution, noise and JPEG artefacts. Every
random choice comes from the ``random.Random`` passed in, so a sample is a function of its seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, fields

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["SynthStyle", "SynthRenderer", "PRESETS"]


@dataclass(frozen=True)
class SynthStyle:
    font_size: tuple[int, int] = (22, 40)
    p_spacing: float = 0.2           # extra character spacing (-0.05..0.35 of the size)
    p_stroke: float = 0.15
    p_shadow: float = 0.15
    p_curve: float = 0.15            # arc or sine baseline
    max_curve: float = 0.35          # amplitude as a fraction of the text height
    max_rotation: float = 4.0        # degrees
    p_perspective: float = 0.3
    max_perspective: float = 0.08    # corner jitter as a fraction of the height
    background_weights: tuple[float, float, float, float] = (0.35, 0.25, 0.15, 0.25)  # flat, gradient, noise, texture
    min_contrast: float = 70.0       # |luma(text) - luma(background)|
    p_blur: float = 0.3
    max_blur_sigma: float = 1.2
    p_lowres: float = 0.2            # downscale to 40-80% and back
    p_noise: float = 0.3
    max_noise_std: float = 12.0
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (20, 90)
    margin: tuple[float, float] = (0.05, 0.35)  # crop margin as a fraction of the height

    @classmethod
    def from_dict(cls, overrides: dict | None) -> "SynthStyle":
        names = {f.name for f in fields(cls)}
        for k in overrides or {}:
            if k not in names:
                raise KeyError(f"unknown synth style key {k!r} (accepted: {', '.join(sorted(names))})")
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()}
        return cls(**converted)


PRESETS = {
    "default": {},
    # Cleaner text for quick CPU training: fewer heavy distortions.
    "clean": {"p_curve": 0.05, "p_perspective": 0.1, "max_rotation": 2.0, "p_blur": 0.15, "p_lowres": 0.05,
              "p_noise": 0.15, "p_jpeg": 0.15, "min_contrast": 90.0, "background_weights": (0.5, 0.3, 0.1, 0.1)},
    # Harder, closer to real scene text.
    "hard": {"p_curve": 0.3, "max_curve": 0.5, "max_rotation": 8.0, "p_perspective": 0.5, "max_perspective": 0.15,
             "p_blur": 0.45, "max_blur_sigma": 1.8, "p_lowres": 0.35, "p_noise": 0.45, "p_jpeg": 0.45,
             "min_contrast": 45.0, "jpeg_quality": (10, 80)},
}


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


class SynthRenderer:
    def __init__(self, fonts: list[str], style: SynthStyle, seed: int = 0, num_textures: int = 32):
        if not fonts:
            raise ValueError("SynthRenderer: no usable fonts (install the font packages or pass font_dirs)")
        self.fonts = list(fonts)
        self.style = style
        self._font_cache: dict = {}
        tex_rng = np.random.default_rng(seed + 7919)
        self.textures = [self._make_texture(tex_rng) for _ in range(num_textures)]

    # ---- glyphs -------------------------------------------------------------------------------
    def _font(self, path: str, size: int) -> ImageFont.FreeTypeFont:
        key = (path, size)
        font = self._font_cache.get(key)
        if font is None:
            if len(self._font_cache) > 512:
                self._font_cache.clear()
            font = self._font_cache[key] = ImageFont.truetype(path, size)
        return font

    def _text_masks(self, text: str, font, spacing: float, stroke: int) -> tuple[np.ndarray, np.ndarray | None]:
        ascent, descent = font.getmetrics()
        pad = stroke + 2
        advances = [font.getlength(c) for c in text]
        width = int(sum(advances) + spacing * max(len(text) - 1, 0) + 2 * pad + font.size * 0.3)
        height = ascent + descent + 2 * pad
        fill = Image.new("L", (max(width, 4), height), 0)
        outline = Image.new("L", fill.size, 0) if stroke else None
        draw_fill = ImageDraw.Draw(fill)
        draw_outline = ImageDraw.Draw(outline) if outline is not None else None
        if spacing == 0:
            draw_fill.text((pad, pad), text, fill=255, font=font)
            if draw_outline is not None:
                draw_outline.text((pad, pad), text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
        else:
            x = float(pad)
            for c, adv in zip(text, advances):
                draw_fill.text((x, pad), c, fill=255, font=font)
                if draw_outline is not None:
                    draw_outline.text((x, pad), c, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
                x += adv + spacing
        return np.asarray(fill), (np.asarray(outline) if outline is not None else None)

    # ---- geometry -----------------------------------------------------------------------------
    def _curve(self, masks: list[np.ndarray], rng: random.Random) -> list[np.ndarray]:
        h, w = masks[0].shape
        amp = rng.uniform(0.1, self.style.max_curve) * h
        pad = int(np.ceil(amp)) + 1
        xs = np.arange(w, dtype=np.float32)
        if rng.random() < 0.5:  # arc: parabola through the ends
            shift = amp * (1 - ((xs - w / 2) / (w / 2)) ** 2) * rng.choice((-1, 1))
        else:  # sine
            period = rng.uniform(0.6, 1.5) * w
            shift = amp * np.sin(2 * np.pi * xs / period + rng.uniform(0, 2 * np.pi))
        map_x = np.tile(xs, (h + 2 * pad, 1))
        map_y = (np.arange(h + 2 * pad, dtype=np.float32)[:, None] - pad - shift[None, :]).astype(np.float32)
        return [cv2.remap(m, map_x, map_y, cv2.INTER_LINEAR, borderValue=0) if m is not None else None for m in masks]

    def _warp(self, masks: list[np.ndarray], rng: random.Random) -> list[np.ndarray]:
        h, w = masks[0].shape
        st = self.style
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        angle = np.deg2rad(rng.uniform(-st.max_rotation, st.max_rotation))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=np.float32)
        dst = (src - [w / 2, h / 2]) @ rot.T + [w / 2, h / 2]
        if rng.random() < st.p_perspective:
            jitter = st.max_perspective * h
            dst = dst + np.float32([[rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter)] for _ in range(4)])
        dst = dst - dst.min(axis=0)
        out_w, out_h = int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1
        matrix = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
        return [cv2.warpPerspective(m, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=0)
                if m is not None else None for m in masks]

    # ---- backgrounds --------------------------------------------------------------------------
    @staticmethod
    def _make_texture(rng: np.random.Generator) -> np.ndarray:
        base = rng.integers(0, 256, size=(rng.integers(3, 9), rng.integers(6, 24), 3)).astype(np.float32)
        tex = cv2.resize(base, (512, 128), interpolation=cv2.INTER_CUBIC)
        fine = rng.normal(0, rng.uniform(3, 25), size=(128, 512, 1)).astype(np.float32)
        tex = tex + fine
        if rng.random() < 0.5:  # stripes / grain
            period = rng.uniform(4, 40)
            yy, xx = np.mgrid[0:128, 0:512]
            theta = rng.uniform(0, np.pi)
            stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
            tex = tex + (rng.uniform(5, 30) * stripes)[..., None]
        return np.clip(tex, 0, 255).astype(np.uint8)

    def _background(self, h: int, w: int, rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
        kind = rng.choices(range(4), weights=self.style.background_weights)[0]
        color = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
        if kind == 0:
            return np.broadcast_to(color, (h, w, 3)).astype(np.uint8)
        if kind == 1:
            other = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
            t = np.linspace(0, 1, w if rng.random() < 0.6 else h, dtype=np.float32)
            ramp = t[None, :, None] if len(t) == w else t[:, None, None]
            return np.broadcast_to(color * (1 - ramp) + other * ramp, (h, w, 3)).astype(np.uint8)
        if kind == 2:
            noise = nrng.normal(0, rng.uniform(5, 40), size=(h, w, 1)).astype(np.float32)
            return np.clip(color + noise, 0, 255).astype(np.uint8)
        tex = self.textures[rng.randrange(len(self.textures))]
        th, tw = tex.shape[:2]
        if h > th or w > tw:
            tex = cv2.resize(tex, (max(w, tw), max(h, th)))
            th, tw = tex.shape[:2]
        y, x = rng.randint(0, th - h), rng.randint(0, tw - w)
        crop = tex[y:y + h, x:x + w].astype(np.float32)
        mean = crop.reshape(-1, 3).mean(0)
        return (mean + (crop - mean) * rng.uniform(0.3, 0.8)).astype(np.uint8)  # tame busy textures

    def _text_color(self, bg_lumas: np.ndarray, rng: random.Random) -> np.ndarray:
        """A colour whose luma differs by ``min_contrast`` from every background region's luma
        (else black or white, whichever contrasts more with the worst region)."""
        lo, hi = float(bg_lumas.min()), float(bg_lumas.max())
        for _ in range(20):
            c = [rng.randint(0, 255) for _ in range(3)]
            y = _luma(c)
            if min(abs(y - lo), abs(y - hi)) >= self.style.min_contrast and not lo < y < hi:
                return np.array(c, dtype=np.float32)
        return np.zeros(3, np.float32) if hi > 255 - lo else np.full(3, 255, np.float32)

    @staticmethod
    def _region_lumas(img: np.ndarray) -> np.ndarray:
        """Mean luma of a coarse grid of background regions (2 rows x up to 8 columns)."""
        h, w = img.shape[:2]
        grid = cv2.resize(img, (min(8, w), min(2, h)), interpolation=cv2.INTER_AREA).reshape(-1, 3)
        return 0.299 * grid[:, 0] + 0.587 * grid[:, 1] + 0.114 * grid[:, 2]

    # ---- main ---------------------------------------------------------------------------------
    def render(self, text: str, rng: random.Random) -> np.ndarray:
        """RGB uint8 image (H, W, 3) of ``text``; the label is exactly ``text``."""
        st = self.style
        nrng = np.random.default_rng(rng.getrandbits(63))
        font = self._font(self.fonts[rng.randrange(len(self.fonts))], rng.randint(*st.font_size))
        spacing = rng.uniform(-0.05, 0.35) * font.size if rng.random() < st.p_spacing else 0.0
        stroke = rng.randint(1, max(1, font.size // 12)) if rng.random() < st.p_stroke else 0
        fill, outline = self._text_masks(text, font, spacing, stroke)
        masks = [fill, outline]
        if rng.random() < st.p_curve:
            masks = self._curve(masks, rng)
        masks = self._warp(masks, rng)
        cover = masks[1] if masks[1] is not None else masks[0]
        ys, xs = np.nonzero(cover > 16)
        if len(ys) == 0:  # e.g. a lone space: keep the canvas
            ys, xs = np.array([0, cover.shape[0] - 1]), np.array([0, cover.shape[1] - 1])
        text_h = ys.max() - ys.min() + 1
        m = [int(rng.uniform(*st.margin) * text_h) for _ in range(4)]
        y0, y1 = ys.min() - m[0], ys.max() + 1 + m[1]
        x0, x1 = xs.min() - m[2], xs.max() + 1 + m[3]
        pads = (max(0, -y0), max(0, y1 - cover.shape[0]), max(0, -x0), max(0, x1 - cover.shape[1]))
        masks = [np.pad(mm, (pads[:2], pads[2:]))[y0 + pads[0]:y1 + pads[0], x0 + pads[2]:x1 + pads[2]]
                 if mm is not None else None for mm in masks]
        cover = masks[1] if masks[1] is not None else masks[0]
        h, w = cover.shape
        img = self._background(h, w, rng, nrng).astype(np.float32)
        color = self._text_color(self._region_lumas(img), rng)
        if rng.random() < st.p_shadow:
            dx, dy = rng.randint(-3, 3), rng.randint(1, 3)
            shadow = np.roll(np.roll(cover, dy, axis=0), dx, axis=1).astype(np.float32)
            shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(0.5, 1.5))[..., None] / 255.0
            img = img * (1 - 0.7 * shadow)
        if masks[1] is not None:
            stroke_color = self._text_color(np.array([_luma(color)]), rng)
            a = masks[1].astype(np.float32)[..., None] / 255.0
            img = img * (1 - a) + stroke_color * a
        a = masks[0].astype(np.float32)[..., None] / 255.0
        img = img * (1 - a) + color * a
        if rng.random() < st.p_blur:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, st.max_blur_sigma))
        if rng.random() < st.p_lowres:
            f = rng.uniform(0.4, 0.8)
            small = cv2.resize(img, (max(2, int(w * f)), max(2, int(h * f))), interpolation=cv2.INTER_AREA)
            img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if rng.random() < st.p_noise:
            img = img + nrng.normal(0, rng.uniform(2, st.max_noise_std), size=img.shape).astype(np.float32)
        img = np.clip(img, 0, 255).astype(np.uint8)
        if rng.random() < st.p_jpeg:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(*st.jpeg_quality)])
            if ok:
                img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return img
