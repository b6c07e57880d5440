"""Font discovery: fonts shipped by installed packages (matplotlib, the ``font-*`` packages) plus
user directories, kept only if they cover every character of the charset with real glyphs."""
from __future__ import annotations

import functools
import glob
import importlib.metadata
import os

__all__ = ["discover_fonts", "font_covers"]

# Fonts whose glyphs do not match their code points for text: small capitals for lower case
# (AmaticSC), TeX encodings (matplotlib's cm* BaKoMa fonts), symbol and fallback fonts.
_DENY = ("AmaticSC", "LastResort", "STIXNonUni", "STIXSiz", "DejaVuSansDisplay", "DejaVuSerifDisplay",
         "cmb10", "cmex10", "cmmi10", "cmr10", "cmss10", "cmsy10", "cmti10", "cmtt10")


def _package_fonts() -> list[str]:
    paths = []
    try:
        import matplotlib
        paths += glob.glob(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "*.ttf"))
    except ImportError:
        pass
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith("font-") or name.startswith("font_"):
            for f in dist.files or []:
                if str(f).lower().endswith((".ttf", ".otf")):
                    paths.append(str(dist.locate_file(f)))
    return paths


@functools.lru_cache(maxsize=None)
def font_covers(path: str, characters: str) -> bool:
    """Whether the font maps every character to a glyph (fontTools cmap check)."""
    try:
        from fontTools.ttLib import TTFont
        with TTFont(path, lazy=True, fontNumber=0) as font:
            cmap = font.getBestCmap() or {}
    except Exception:
        return False
    return all(ord(c) in cmap for c in characters if not c.isspace())


def discover_fonts(characters: str, font_dirs: tuple[str, ...] = (), use_package_fonts: bool = True) -> list[str]:
    """Sorted list of usable font files; a .ttf wins over an .otf of the same name."""
    paths = _package_fonts() if use_package_fonts else []
    for d in font_dirs:
        if not os.path.isdir(d):
            raise FileNotFoundError(f"font directory not found: {d}")
        paths += glob.glob(os.path.join(d, "**", "*.[ot]tf"), recursive=True)
        paths += glob.glob(os.path.join(d, "**", "*.[OT]TF"), recursive=True)
    by_stem: dict[str, str] = {}
    for p in sorted(set(paths)):
        stem = os.path.splitext(os.path.basename(p))[0]
        if any(d in stem for d in _DENY):
            continue
        if stem in by_stem and by_stem[stem].lower().endswith(".ttf"):
            continue
        by_stem[stem] = p
    return sorted(p for p in by_stem.values() if font_covers(p, characters))
