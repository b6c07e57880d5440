"""Fetch a wide, deterministic selection of Google Fonts (OFL/Apache) from the npm registry
(@fontsource packages) for the synthetic engine, as small TTFs subset to printable ASCII.

    python scripts/fetch_fonts.py --out data/fonts --manifest configs/rec/svtrv2/fonts_manifest.tsv  # the recipe's 400
    python scripts/fetch_fonts.py --out DIR [--seed 0] [--scale 1.0] [--jobs 8]    # a fresh selection
    # then: {type: synth, ..., font_dirs: [DIR]}

Why: the engine's default fonts (matplotlib's and the font-* wheels) are about 100 files from 15
families; real scene text is set in far more faces. The selection draws families per category
(sans-serif, serif, monospace) with fixed quotas, one file per family (regular or bold, sometimes
italic), seeded, from a pinned metadata package; each npm package is pinned by the
version resolved on the first run and written to MANIFEST.tsv, which a later run with --manifest
reproduces exactly. Files whose glyphs cannot carry a case-sensitive label are dropped: lower case
drawn as capitals or small capitals, and letters that render blank or identical to each other.
Needs `npm` and fontTools (a matplotlib dependency). The fonts are not part of the package.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import io
import json
import os
import random
import string
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from openrec.data.synth.fonts import font_covers  # noqa: E402

METADATA = "google-font-metadata@6.0.8"
# Text faces only: with display (100) and handwriting (50) faces added as well, the engine ablation
# (README "Accuracy on real text") scored 0.6 points lower on the real training splits.
QUOTAS = {"sans-serif": 260, "serif": 120, "monospace": 20}
_SKIP = ("icons", "symbols", "emoji", "barcode", "redacted", "blank", "flow-", "linefont")
CHARS = "".join(chr(c) for c in range(0x21, 0x7F)) + " "


def npm_pack(spec: str, dest: str) -> str:
    """Download one npm package tarball; returns its path."""
    out = subprocess.run(["npm", "pack", "--loglevel", "error", "--pack-destination", dest, spec], capture_output=True,
                         text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"npm pack {spec}: {out.stderr.strip()[-300:]}")
    return os.path.join(dest, out.stdout.strip().splitlines()[-1])


def load_metadata(tmp: str) -> dict:
    tgz = npm_pack(METADATA, tmp)
    with tarfile.open(tgz) as tar:
        return json.load(tar.extractfile("package/data/google-fonts-v2.json"))


def candidates(meta: dict, seed: int, categories=tuple(QUOTAS)) -> dict[str, list[tuple[str, str, str]]]:
    """Per category, every eligible family in a seeded order, each as (id, weight, style): regular
    (or the weight nearest 400) 60% of the time, bold (or nearest 700) otherwise; italic for 10%
    where the family has it. At most 3 families per first name token (Noto and Playwrite publish
    scores of script or country variants that share one Latin design), small caps excluded."""
    out = {}
    for category in categories:
        ids = sorted(k for k, v in meta.items() if v.get("category") == category and "latin" in v.get("subsets", [])
                     and not k.endswith("-sc") and not any(x in k for x in _SKIP))
        rng = random.Random(f"{seed}:{category}")
        rng.shuffle(ids)
        per_token: dict[str, int] = {}
        rows = []
        for fid in ids:
            token = fid.split("-")[0]
            if per_token.get(token, 0) >= 3:
                continue
            per_token[token] = per_token.get(token, 0) + 1
            v = meta[fid]
            weights = [int(w) for w in v.get("weights", [])] or [400]
            target = 400 if rng.random() < 0.6 else 700
            weight = min(weights, key=lambda w: (abs(w - target), w))
            style = "italic" if "italic" in v.get("styles", ["normal"]) and rng.random() < 0.1 else "normal"
            rows.append((fid, str(weight), style))
        out[category] = rows
    return out


def subset_to_ttf(woff: bytes) -> bytes:
    """Printable ASCII only, no hinting: a few KB per face."""
    from fontTools import subset
    from fontTools.ttLib import TTFont
    font = TTFont(io.BytesIO(woff), recalcTimestamp=False)  # byte-identical output on every run
    options = subset.Options()
    options.hinting = False
    options.desubroutinize = True
    options.name_IDs = [1, 2, 4, 6]
    options.flavor = None
    sub = subset.Subsetter(options)
    sub.populate(text=CHARS)
    sub.subset(font)
    buf = io.BytesIO()
    font.save(buf)
    return buf.getvalue()


def unusable_reason(path: str) -> str | None:
    """Why a face cannot carry case-sensitive labels, or None: missing glyphs, blank letters, lower
    case drawn as (small) capitals, or most letters identical to each other."""
    if not font_covers(path, CHARS):
        return "missing_glyphs"
    font = ImageFont.truetype(path, 48)

    def glyph(c):
        img = Image.new("L", (96, 96), 0)
        ImageDraw.Draw(img).text((16, 8), c, fill=255, font=font)
        a = np.asarray(img) > 96
        ys, xs = np.nonzero(a)
        if len(ys) == 0:
            return None
        crop = Image.fromarray((a[ys.min():ys.max() + 1, xs.min():xs.max() + 1] * 255).astype(np.uint8))
        return np.asarray(crop.resize((16, 16), Image.BILINEAR), dtype=np.float32) / 255.0

    letters = string.ascii_letters + string.digits
    shapes = {c: glyph(c) for c in letters}
    if any(s is None for s in shapes.values()):
        return "blank_glyph"
    # Lower case that matches its capital in shape (after size normalisation) for letters whose
    # cases differ in any ordinary face: a caps or small-caps font.
    distinct = "abdegnqrt"
    same = sum(float(np.abs(shapes[c] - shapes[c.upper()]).mean()) < 0.12 for c in distinct)
    if same >= 6:
        return "caps_only"
    flat = np.stack([shapes[c].ravel() for c in letters])
    dist = np.abs(flat[:, None, :] - flat[None, :, :]).mean(-1)
    np.fill_diagonal(dist, 1.0)
    if (dist.min(1) < 0.02).mean() > 0.3:  # many letters drawn alike (a decorative or placeholder face)
        return "letters_alike"
    return None


def fetch_family(fid: str, weight: str, style: str, version: str | None, out: str, tmp: str) -> tuple:
    spec = f"@fontsource/{fid}@{version}" if version else f"@fontsource/{fid}"
    tgz = npm_pack(spec, tmp)
    version = os.path.basename(tgz).rsplit("-", 1)[-1].removesuffix(".tgz")
    member = f"package/files/{fid}-latin-{weight}-{style}.woff"
    try:
        with tarfile.open(tgz) as tar:
            data = tar.extractfile(member).read()
    except KeyError:
        return fid, version, None, "no_latin_woff"
    finally:
        os.remove(tgz)
    name = f"{fid}-{weight}-{style}.ttf"
    path = os.path.join(out, name)
    with open(path, "wb") as f:
        f.write(subset_to_ttf(data))
    reason = unusable_reason(path)
    if reason:
        os.remove(path)
        return fid, version, None, reason
    return fid, version, name, None


def signature(path: str):
    """A coarse rendering of a pangram-like string: two files with the same design match closely."""
    font = ImageFont.truetype(path, 32)
    img = Image.new("L", (900, 48), 0)
    ImageDraw.Draw(img).text((4, 4), "Hamburgefonstiv QRXZ 0123", fill=255, font=font)
    return np.asarray(img.resize((225, 12), Image.BILINEAR), dtype=np.float32) / 255.0


def run_jobs(jobs: list, out: str, tmp: str, workers: int, kept: list, dropped: dict, signatures: list) -> None:
    """Downloads in parallel; results are taken in job order, so which of two duplicate designs is
    kept does not depend on download timing."""
    with cf.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(fetch_family, fid, w, s, v, out, tmp) for fid, w, s, v in jobs]
        for fut, (fid, w, s, _) in zip(futures, jobs):
            try:
                _, version, name, reason = fut.result()
            except Exception as e:  # one package failing must not lose the others
                version, name = "", None
                reason = "not_on_npm" if "404" in str(e) else f"error:{type(e).__name__}"
            if name:
                sig = signature(os.path.join(out, name))
                if any(float(np.abs(sig - other).mean()) < 0.01 for other in signatures):
                    os.remove(os.path.join(out, name))
                    name, reason = None, "duplicate_design"
                else:
                    signatures.append(sig)
            if name:
                with open(os.path.join(out, name), "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()[:16]
                kept.append((fid, w, s, version, name, digest))
            else:
                dropped[reason] = dropped.get(reason, 0) + 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every category quota")
    p.add_argument("--categories", nargs="*", metavar="NAME=N", default=None,
                   help="quotas instead of the default ones, e.g. sans-serif=260 serif=120 display=100 "
                        "handwriting=50 monospace=20 (the ablation's 550 faces)")
    p.add_argument("--manifest", help="a MANIFEST.tsv of an earlier run: fetch exactly its files and versions")
    p.add_argument("--jobs", type=int, default=8)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    kept, dropped, signatures = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        if args.manifest:
            with open(args.manifest) as f:
                rows = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
            run_jobs([tuple(r[:4]) for r in rows], args.out, tmp, args.jobs, kept, dropped, signatures)
            expected = {r[4]: r[5] for r in rows if len(r) > 5}
            differ = sorted(row[4] for row in kept if expected.get(row[4], row[5]) != row[5])
            if differ:
                print(f"warning: {len(differ)} files differ from the manifest's sha256 (another fontTools?): "
                      f"{', '.join(differ[:5])}")
        else:
            quotas = dict(QUOTAS)
            if args.categories is not None:
                quotas = {k: int(v) for k, v in (c.split("=", 1) for c in args.categories)}
            pools = candidates(load_metadata(tmp), args.seed, list(quotas))
            for category, rows in pools.items():
                quota = max(1, round(quotas[category] * args.scale))
                pos, have = 0, 0
                while have < quota and pos < len(rows):  # rounds: refill what 404s and filters removed
                    batch = rows[pos:pos + quota - have]
                    pos += len(batch)
                    before = len(kept)
                    run_jobs([(fid, w, s, None) for fid, w, s in batch], args.out, tmp, args.jobs, kept, dropped,
                             signatures)
                    have += len(kept) - before
                print(f"{category}: {have} faces", flush=True)
    kept.sort()
    with open(os.path.join(args.out, "MANIFEST.tsv"), "w") as f:
        f.write(f"# family\tweight\tstyle\tnpm version\tfile\tsha256[:16]  (from {METADATA}, seed {args.seed})\n")
        for row in kept:
            f.write("\t".join(row) + "\n")
    print(f"kept {len(kept)} faces in {args.out}; dropped {sum(dropped.values())}: {dropped}")
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
