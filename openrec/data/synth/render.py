"""Synthetic word-image renderer (PIL for glyphs, OpenCV/numpy for geometry and degradations).

Per sample: font (optionally family-balanced) and size, optional character spacing, stroke and faux
bold, optional curved baseline (arc or sine), rotation and perspective, a background (flat, gradient,
noise or texture) and a text colour with a minimum contrast (uniform RGB or natural colours), edge
clutter, an optional shadow and uneven lighting, then blur, motion blur, low resolution, noise and
JPEG artefacts. Every random choice comes from the ``random.Random`` passed in, so a sample is a
function of its seed.
"""
from __future__ import annotations

import random
import re
import string
import weakref

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .effects import add_distractor, faux_bold, lighting_field, motion_blur, natural_color
from .style import PRESETS, SynthStyle

__all__ = ["SynthStyle", "SynthRenderer", "PRESETS"]


def _family(path: str) -> str:
    """'Roboto-BoldItalic.ttf' -> 'Roboto'; 'STIXGeneralBolIta.ttf' -> 'STIXGeneral'."""
    stem = re.split(r"[-_]", path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0])[0]
    return re.sub(r"(BolIta|Bol|Italic|Oblique)$", "", stem) or stem


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _crop(mask: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``mask[y0:y1, x0:x1]``, zeros where the window leaves the mask (no padded copy of the whole mask)."""
    out = np.zeros((y1 - y0, x1 - x0), mask.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, mask.shape[0]), max(x0, 0), min(x1, mask.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = mask[sy0:sy1, sx0:sx1]
    return out


def _blend(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Paint ``color`` over ``img`` (H, W, 3) with the coverage ``alpha`` (H, W, uint8 0..255)."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    return img * (1 - a) + color * a


class SynthRenderer:
    def __init__(self, fonts: list[str], style: SynthStyle, seed: int = 0, num_textures: int = 32,
                 clutter_chars: str = string.ascii_letters + string.digits):
        if not fonts:
            raise ValueError("SynthRenderer: no usable fonts (install the font packages or pass font_dirs)")
        self.fonts = list(fonts)
        self.style = style
        self.chars = clutter_chars  # glyphs drawn as cut-off neighbours at the crop edges
        families: dict[str, list[str]] = {}
        for path in self.fonts:
            families.setdefault(_family(path), []).append(path)
        self.families = [families[k] for k in sorted(families)]
        self._font_cache: dict = {}
        # Room for every (face, size) the style can draw, up to 16384 (~22 KB each, ~350 MB): a miss
        # costs ~0.7 ms of the ~2 ms sample (measured, perf note 66), several times the 0.15 ms of
        # opening the face.
        low, high = style.font_size
        self.font_cache_size = max(1, min(16384, len(self.fonts) * (high - low + 1)))
        self.font_opens = 0  # cache misses, for tools/bench_synth.py
        # Each cached face's character advances (FreeTypeFont.getlength of one character, ~17 us a
        # call, a call per character of every sample: perf note 69); an entry leaves with its face.
        self._advances: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        tex_rng = np.random.default_rng(seed + 7919)
        self.textures = [self._make_texture(tex_rng) for _ in range(num_textures)]

    def clear_font_cache(self) -> None:
        """Forget every opened face, as a new worker process starts (tools/bench_synth.py --cold-cache)."""
        self._font_cache.clear()
        self._advances.clear()

    # ---- glyphs -------------------------------------------------------------------------------
    def _font(self, path: str, size: int) -> ImageFont.FreeTypeFont:
        # Least-recently-used, in case more pairs exist than font_cache_size holds.
        key = (path, size)
        font = self._font_cache.pop(key, None)
        if font is None:
            self.font_opens += 1
            if len(self._font_cache) >= self.font_cache_size:
                del self._font_cache[next(iter(self._font_cache))]
            font = ImageFont.truetype(path, size)
        self._font_cache[key] = font
        return font

    def _text_masks(self, text: str, font, spacing: float, stroke: int) -> tuple[np.ndarray, np.ndarray | None]:
        ascent, descent = font.getmetrics()
        pad = stroke + 2
        known = self._advances.get(font)
        if known is None:
            known = self._advances[font] = {}
        advances = []
        for c in text:
            advance = known.get(c)
            if advance is None:
                advance = known[c] = font.getlength(c)
            advances.append(advance)
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

    def _arc(self, masks: list[np.ndarray], rng: random.Random) -> list[np.ndarray]:
        """Lay the line along a circular arc, above the centre (arched up) or below it, so that each
        glyph turns with the tangent. ``_curve`` only shifts columns and leaves glyphs upright, but
        the first and last letters of arched signs are turned by tens of degrees; they were a large
        share of the released model's edge-letter errors."""
        h, w = masks[0].shape
        span = np.deg2rad(rng.uniform(*self.style.arc_degrees))
        span = min(span, 1.6 * w / h, 0.95 * np.pi)  # keeps the inner radius above h/8, the band one-sided
        r_mid = w / span                               # the middle of the line keeps its length
        r_out, r_in = r_mid + h / 2, r_mid - h / 2
        up = rng.random() < 0.5                        # glyph tops outward (arched up) or toward the centre
        half = span / 2
        out_w = int(np.ceil(2 * r_out * np.sin(half))) + 2
        out_h = int(np.ceil(r_out - r_in * np.cos(half))) + 2
        xs = np.arange(out_w, dtype=np.float32) - out_w / 2
        ys = np.arange(out_h, dtype=np.float32)
        dx = np.broadcast_to(xs[None, :], (out_h, out_w))
        # distance from the centre along the symmetry axis: the centre is below the band when arched up
        dy = (r_out + 1 - ys)[:, None] if up else (ys + r_in * np.cos(half) - 1)[:, None]
        radius = np.hypot(dx, dy)
        angle = np.arctan2(dx, dy)
        map_x = ((angle + half) * r_mid).astype(np.float32)
        map_y = ((r_out - radius) if up else (radius - r_in)).astype(np.float32)
        return [cv2.remap(m, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                if m is not None else None for m in masks]

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
        color = self._color(rng)
        if kind == 0:
            return np.broadcast_to(color, (h, w, 3)).astype(np.uint8)
        if kind == 1:
            other = self._color(rng)
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
        if self.style.color_mode == "natural":  # a muted texture around a natural colour
            gray = crop.mean(axis=2, keepdims=True)
            crop = gray + (crop - gray) * rng.uniform(0.0, 0.5)
            return np.clip(color + (crop - crop.reshape(-1, 3).mean(0)) * rng.uniform(0.2, 0.6), 0, 255).astype(np.uint8)
        mean = crop.reshape(-1, 3).mean(0)
        return (mean + (crop - mean) * rng.uniform(0.3, 0.8)).astype(np.uint8)  # tame busy textures

    def _color(self, rng: random.Random) -> np.ndarray:
        if self.style.color_mode == "natural":
            return natural_color(rng)
        return np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)

    def _text_color(self, bg_lumas: np.ndarray, rng: random.Random) -> np.ndarray:
        """A colour whose luma differs by ``min_contrast`` from every background region's luma
        (else black or white, whichever contrasts more with the worst region)."""
        lo, hi = float(bg_lumas.min()), float(bg_lumas.max())
        for _ in range(20):
            c = self._color(rng)
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
        if st.family_balanced:
            family = self.families[rng.randrange(len(self.families))]
            font_path = family[rng.randrange(len(family))]
        else:
            font_path = self.fonts[rng.randrange(len(self.fonts))]
        font = self._font(font_path, rng.randint(*st.font_size))
        spacing = rng.uniform(-0.05, 0.35) * font.size if rng.random() < st.p_spacing else 0.0
        stroke = rng.randint(1, max(1, font.size // 12)) if rng.random() < st.p_stroke else 0
        fill, outline = self._text_masks(text, font, spacing, stroke)
        if st.p_bold and rng.random() < st.p_bold:
            fill = faux_bold(fill, font.size, rng)
            outline = faux_bold(outline, font.size, rng) if outline is not None else None
        masks = [fill, outline]
        if rng.random() < st.p_curve:
            masks = self._curve(masks, rng)
        elif st.p_arc and rng.random() < st.p_arc:  # draws nothing when p_arc is 0: presets stay bit-identical
            masks = self._arc(masks, rng)
        masks = self._warp(masks, rng)
        cover = masks[1] if masks[1] is not None else masks[0]
        ys, xs = np.nonzero(cover > 16)
        if len(ys) == 0:  # e.g. a lone space: keep the canvas
            ys, xs = np.array([0, cover.shape[0] - 1]), np.array([0, cover.shape[1] - 1])
        text_h = ys.max() - ys.min() + 1
        m = [int(rng.uniform(*st.margin) * text_h) for _ in range(4)]
        y0, y1 = ys.min() - m[0], ys.max() + 1 + m[1]
        x0, x1 = xs.min() - m[2], xs.max() + 1 + m[3]
        masks = [_crop(mm, y0, y1, x0, x1) if mm is not None else None for mm in masks]
        cover = masks[1] if masks[1] is not None else masks[0]
        h, w = cover.shape
        img = self._background(h, w, rng, nrng).astype(np.float32)
        color = self._text_color(self._region_lumas(img), rng)
        if st.p_distractor and rng.random() < st.p_distractor:
            box = (m[0], h - m[1], m[2], w - m[3])
            clutter = add_distractor((h, w), box, rng, lambda c: self._text_masks(c, font, 0.0, 0)[0], self.chars)
            if clutter is not None:
                paint = color if rng.random() < 0.7 else self._text_color(self._region_lumas(img), rng)
                img = _blend(img, clutter, paint)
        if rng.random() < st.p_shadow:
            dx, dy = rng.randint(-3, 3), rng.randint(1, 3)
            shadow = np.roll(np.roll(cover, dy, axis=0), dx, axis=1).astype(np.float32)
            shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(0.5, 1.5))[..., None] / 255.0
            img = img * (1 - 0.7 * shadow)
        if masks[1] is not None:
            img = _blend(img, masks[1], self._text_color(np.array([_luma(color)]), rng))
        img = _blend(img, masks[0], color)
        if st.p_lighting and rng.random() < st.p_lighting:
            img = img * lighting_field(h, w, rng)
        if rng.random() < st.p_blur:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, st.max_blur_sigma))
        if st.p_motion_blur and rng.random() < st.p_motion_blur:
            img = motion_blur(img, rng)
        if rng.random() < st.p_lowres:
            f = rng.uniform(*st.lowres_scale)
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
