"""A generator of bad LMDB records, mixed with good ones, for robustness tests.

Kinds (each ``kind -> expected outcome``): records the pipeline must skip with a reason, and unusual
but valid images it must read (16-bit, palette, RGBA, CMYK, grey, EXIF-rotated, 10000x10).
"""
from __future__ import annotations

import io
import os
import random

import numpy as np
from PIL import Image

__all__ = ["BAD_KINDS", "write_fuzzed_lmdb"]

# kind -> the skip reason the dataset must report, or None when the record is valid and must be used.
BAD_KINDS = {
    "corrupt_jpeg": "corrupt_image",
    "truncated_jpeg": "corrupt_image",
    "truncated_png": "corrupt_image",
    "empty_image": "empty_image",
    "tiny_1x1": "image_too_small",
    "huge_header": "image_too_large",
    "wide_10000x10": None,
    "png_16bit": None,
    "palette": None,
    "rgba": None,
    "cmyk_jpeg": None,
    "grayscale": None,
    "exif_rotated": None,
    "empty_label": "empty",
    "long_label": "too_long",
    "out_of_charset_label": "empty",      # every character unknown: nothing left to learn from
    "invalid_utf8_label": "invalid_utf8_label",
    "missing_image_key": "missing_record",
    "missing_label_key": "missing_record",
}


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _word_image(rng: np.random.Generator, w: int = 96, h: int = 32, mode: str = "RGB") -> Image.Image:
    arr = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def _huge_header_png() -> bytes:
    """A PNG whose header claims 100000 x 100000 pixels (no real pixel data)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _record(kind: str, rng: np.random.Generator, max_len: int) -> tuple[bytes | None, bytes | None]:
    """(image bytes, label bytes) for one record; None means the key is absent."""
    good_jpeg = _encode(_word_image(rng), "JPEG", quality=90)
    label = b"word"
    if kind == "corrupt_jpeg":  # a JPEG signature followed by noise
        return b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, size=300, dtype=np.uint8)), label
    if kind == "truncated_jpeg":
        return good_jpeg[: len(good_jpeg) // 3], label
    if kind == "truncated_png":
        png = _encode(_word_image(rng), "PNG")
        return png[: len(png) // 2], label
    if kind == "empty_image":
        return b"", label
    if kind == "tiny_1x1":
        return _encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), label
    if kind == "huge_header":
        return _huge_header_png(), label
    if kind == "wide_10000x10":
        return _encode(_word_image(rng, 10000, 10), "PNG"), label
    if kind == "png_16bit":
        arr = rng.integers(0, 65535, size=(32, 80), dtype=np.uint16)
        return _encode(Image.fromarray(arr), "PNG"), label  # uint16 -> mode I;16
    if kind == "palette":
        return _encode(_word_image(rng).convert("P"), "PNG"), label
    if kind == "rgba":
        return _encode(_word_image(rng, mode="RGBA"), "PNG"), label
    if kind == "cmyk_jpeg":
        return _encode(_word_image(rng).convert("CMYK"), "JPEG"), label
    if kind == "grayscale":
        return _encode(_word_image(rng, mode="L"), "JPEG"), label
    if kind == "exif_rotated":
        img = _word_image(rng)
        exif = img.getexif()
        exif[0x0112] = 6  # rotate 90 degrees on display
        return _encode(img, "JPEG", exif=exif), label
    if kind == "empty_label":
        return good_jpeg, b""
    if kind == "long_label":
        return good_jpeg, b"x" * (max_len + 5)
    if kind == "out_of_charset_label":
        return good_jpeg, "日本語テキスト".encode()
    if kind == "invalid_utf8_label":
        return good_jpeg, b"\xff\xfe\xfa bad"
    if kind == "missing_image_key":
        return None, label
    if kind == "missing_label_key":
        return good_jpeg, None
    raise KeyError(kind)


def write_fuzzed_lmdb(path: str, num_bad: int = 1000, num_good: int = 200, seed: int = 0, max_len: int = 25,
                      extra_claimed: int = 20) -> dict[str, int]:
    """Writes ``num_bad`` bad records (kinds in turn) shuffled with ``num_good`` good ones, and claims
    ``extra_claimed`` more records in ``num-samples`` than exist. Returns the count per kind
    (``good`` and ``claimed_but_absent`` included)."""
    import lmdb
    rng = np.random.default_rng(seed)
    kinds = [list(BAD_KINDS)[i % len(BAD_KINDS)] for i in range(num_bad)] + ["good"] * num_good
    random.Random(seed).shuffle(kinds)
    counts: dict[str, int] = {}
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, map_size=1 << 32)
    with env.begin(write=True) as txn:
        for i, kind in enumerate(kinds, 1):
            if kind == "good":
                image, label = _encode(_word_image(rng), "JPEG", quality=90), b"good"
            else:
                image, label = _record(kind, rng, max_len)
            if image is not None:
                txn.put(b"image-%09d" % i, image)
            if label is not None:
                txn.put(b"label-%09d" % i, label)
            if i % 3:  # most records carry a size hint; a third do not
                txn.put(b"wh-%09d" % i, b"96_32")
            counts[kind] = counts.get(kind, 0) + 1
        txn.put(b"num-samples", str(len(kinds) + extra_claimed).encode())
    env.close()
    counts["claimed_but_absent"] = extra_claimed
    return counts
