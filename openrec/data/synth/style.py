"""What the synthetic engine draws: one frozen ``SynthStyle`` of probabilities and ranges, and named
presets that override some of its fields (config: ``{type: synth, preset: scene, style: {...}}``)."""
from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["SynthStyle", "PRESETS"]


@dataclass(frozen=True)
class SynthStyle:
    # ---- text ----
    text_mix: tuple[float, ...] = (0.6, 0.15, 0.1, 0.1, 0.05)  # words, random alnum, numbers, punctuated, printable
    case_weights: tuple[float, float, float] = (0.55, 0.25, 0.2)  # lower, Capitalized, UPPER words
    word_temperature: float = 0.5    # 1 = true word frequencies (short words), 0 = uniform (long rare words)
    max_random_len: int = 12
    # ---- glyphs ----
    font_size: tuple[int, int] = (22, 40)
    family_balanced: bool = False    # pick a font family uniformly, then one of its files
    p_spacing: float = 0.2           # extra character spacing (-0.05..0.35 of the size)
    p_stroke: float = 0.15
    p_bold: float = 0.0              # faux bold: dilate the glyphs
    p_shadow: float = 0.15
    # ---- geometry ----
    p_curve: float = 0.15            # arc or sine baseline
    max_curve: float = 0.35          # amplitude as a fraction of the text height
    p_arc: float = 0.0               # text along a circular arc, each glyph turned to the tangent (arched signs)
    arc_degrees: tuple[float, float] = (30.0, 150.0)  # the angle the word spans on its circle
    max_rotation: float = 4.0        # degrees
    p_perspective: float = 0.3
    max_perspective: float = 0.08    # corner jitter as a fraction of the height
    margin: tuple[float, float] = (0.05, 0.35)  # crop margin as a fraction of the height
    # ---- colour and background ----
    color_mode: str = "uniform"      # uniform RGB, or "natural": mostly muted, light/dark neutral signs
    background_weights: tuple[float, float, float, float] = (0.35, 0.25, 0.15, 0.25)  # flat, gradient, noise, texture
    min_contrast: float = 70.0       # |luma(text) - luma(background)|
    p_distractor: float = 0.0        # a border line or fragments of neighbouring glyphs at the crop edge
    p_lighting: float = 0.0          # uneven illumination (a smooth multiplicative field)
    # ---- degradations ----
    p_blur: float = 0.3
    max_blur_sigma: float = 1.2
    p_motion_blur: float = 0.0
    p_lowres: float = 0.2            # downscale by lowres_scale and back
    lowres_scale: tuple[float, float] = (0.4, 0.8)
    p_noise: float = 0.3
    max_noise_std: float = 12.0
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (20, 90)

    @classmethod
    def from_dict(cls, overrides: dict | None) -> "SynthStyle":
        names = {f.name for f in fields(cls)}
        for k in overrides or {}:
            if k not in names:
                raise KeyError(f"unknown synth style key {k!r} (accepted: {', '.join(sorted(names))})")
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()}
        style = cls(**converted)
        if style.color_mode not in ("uniform", "natural"):
            raise KeyError(f"unknown synth color_mode {style.color_mode!r} (accepted: uniform, natural)")
        if len(style.text_mix) != 5 or len(style.case_weights) != 3:
            raise KeyError("synth style: text_mix needs 5 weights and case_weights 3")
        return style


PRESETS = {
    "default": {},
    # Cleaner text for quick CPU training: fewer heavy distortions.
    "clean": {"p_curve": 0.05, "p_perspective": 0.1, "max_rotation": 2.0, "p_blur": 0.15, "p_lowres": 0.05,
              "p_noise": 0.15, "p_jpeg": 0.15, "min_contrast": 90.0, "background_weights": (0.5, 0.3, 0.1, 0.1)},
    # Harder, closer to real scene text.
    "hard": {"p_curve": 0.3, "max_curve": 0.5, "max_rotation": 8.0, "p_perspective": 0.5, "max_perspective": 0.15,
             "p_blur": 0.45, "max_blur_sigma": 1.8, "p_lowres": 0.35, "p_noise": 0.45, "p_jpeg": 0.45,
             "min_contrast": 45.0, "jpeg_quality": (10, 80)},
    # Tuned towards real word crops, measured on the IIIT5k/IC15/SVT training splits (README "Accuracy
    # on real text"): family-balanced fonts, faux bold, muted natural colours, tight crops with edge
    # clutter, uneven light, low resolution and blur. The text distribution stays the default one:
    # matching the real splits' case and length statistics (about half UPPER, mean length 5) scored
    # 3.9 points lower than the default mix of longer words and random strings.
    "scene": {"font_size": (20, 44), "family_balanced": True, "p_bold": 0.3, "p_stroke": 0.1,
              "p_curve": 0.15, "max_rotation": 5.0, "p_perspective": 0.4, "max_perspective": 0.12,
              "margin": (0.0, 0.25), "color_mode": "natural", "background_weights": (0.3, 0.25, 0.15, 0.3),
              "min_contrast": 60.0, "p_distractor": 0.3, "p_lighting": 0.35, "p_blur": 0.4, "max_blur_sigma": 1.5,
              "p_motion_blur": 0.1, "p_lowres": 0.4, "lowres_scale": (0.35, 0.85), "p_noise": 0.35, "p_jpeg": 0.4},
}
