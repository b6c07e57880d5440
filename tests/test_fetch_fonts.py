"""scripts/fetch_fonts.py without the network: the seeded selection, the ASCII subset and the checks
that drop faces unable to carry a case-sensitive label."""
import io
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
fetch_fonts = pytest.importorskip("fetch_fonts")
pytest.importorskip("fontTools")
matplotlib = pytest.importorskip("matplotlib")

DEJAVU = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")


def _meta():
    fam = {"category": "sans-serif", "subsets": ["latin"], "weights": [300, 400, 700], "styles": ["normal", "italic"]}
    ids = ["noto-sans-a", "noto-sans-b", "noto-sans-c", "noto-sans-d", "roboto", "inter", "alegreya-sans-sc",
           "material-icons-x", "open-sans"]
    meta = {i: dict(fam) for i in ids}
    meta["greek-only"] = dict(fam, subsets=["greek"])
    meta["thin-serif"] = dict(fam, category="serif", weights=[100, 200])
    return meta


def test_candidates_are_seeded_capped_and_filtered():
    a = fetch_fonts.candidates(_meta(), seed=0)
    assert a == fetch_fonts.candidates(_meta(), seed=0)
    sans = [fid for fid, _, _ in a["sans-serif"]]
    assert sum(f.startswith("noto-") for f in sans) == 3  # at most 3 families per first name token
    assert "alegreya-sans-sc" not in sans and "material-icons-x" not in sans and "greek-only" not in sans
    assert {w for _, w, _ in a["sans-serif"]} <= {"400", "700"}
    assert a["serif"] == [("thin-serif", "200", "normal")]  # the weight nearest 400 or 700
    assert a["monospace"] == []
    other = [fid for fid, _, _ in fetch_fonts.candidates(_meta(), seed=1)["sans-serif"]]
    assert other != sans  # another seed, another order


def _woff(font) -> bytes:
    buf = io.BytesIO()
    font.flavor = "woff"
    font.save(buf)
    return buf.getvalue()


def test_subset_keeps_printable_ascii_only():
    from fontTools.ttLib import TTFont
    ttf = fetch_fonts.subset_to_ttf(_woff(TTFont(DEJAVU)))
    cmap = TTFont(io.BytesIO(ttf)).getBestCmap()
    assert set(cmap) == {ord(c) for c in fetch_fonts.CHARS}
    assert len(ttf) < os.path.getsize(DEJAVU) / 10


def test_unusable_reason(tmp_path):
    from fontTools.ttLib import TTFont
    good = tmp_path / "good.ttf"
    good.write_bytes(fetch_fonts.subset_to_ttf(_woff(TTFont(DEJAVU))))
    assert fetch_fonts.unusable_reason(str(good)) is None

    caps = TTFont(str(good))  # lower case mapped to the capitals' glyphs: a caps-only face
    for table in caps["cmap"].tables:
        for c in "abcdefghijklmnopqrstuvwxyz":
            if ord(c) in table.cmap:
                table.cmap[ord(c)] = table.cmap[ord(c.upper())]
    caps.save(str(tmp_path / "caps.ttf"))
    assert fetch_fonts.unusable_reason(str(tmp_path / "caps.ttf")) == "caps_only"

    missing = TTFont(str(good))
    for table in missing["cmap"].tables:
        table.cmap.pop(ord("q"), None)
    missing.save(str(tmp_path / "missing.ttf"))
    assert fetch_fonts.unusable_reason(str(tmp_path / "missing.ttf")) == "missing_glyphs"
