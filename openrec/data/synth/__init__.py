"""Built-in synthetic text engine: seeded, reproducible word images with exact labels."""
from .fonts import discover_fonts, font_covers
from .render import PRESETS, SynthRenderer, SynthStyle
from .text import TextSampler

__all__ = ["discover_fonts", "font_covers", "PRESETS", "SynthRenderer", "SynthStyle", "TextSampler"]
