"""Writing STR LMDBs (``num-samples``, ``image-%09d``, ``label-%09d``, ``wh-%09d`` = "W_H", 1-indexed)."""
from __future__ import annotations

import csv
import io
import os
from collections import Counter

from PIL import Image

__all__ = ["LMDBWriter", "parse_label_line", "create_lmdb_from_folder", "image_size"]


class LMDBWriter:
    """Appends records and commits every ``commit_every``; ``num-samples`` is written on close."""

    def __init__(self, path: str, map_size: int = 1 << 40, commit_every: int = 1000):
        import lmdb
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(path, map_size=map_size)
        self.count = 0
        self.commit_every = commit_every
        self._txn = self.env.begin(write=True)

    def add(self, image: bytes, label: str, width: int, height: int) -> None:
        self.count += 1
        self._txn.put(b"image-%09d" % self.count, image)
        self._txn.put(b"label-%09d" % self.count, label.encode("utf-8"))
        self._txn.put(b"wh-%09d" % self.count, f"{width}_{height}".encode())
        if self.count % self.commit_every == 0:
            self._txn.commit()
            self._txn = self.env.begin(write=True)

    def close(self) -> None:
        self._txn.put(b"num-samples", str(self.count).encode())
        self._txn.commit()
        self.env.sync()
        self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) after decoding fully (so truncated files are caught)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.size


def parse_label_line(line: str) -> tuple[str, str] | None:
    """``path<TAB>label`` or the ICDAR form ``path, "label"``; None for a blank line."""
    line = line.rstrip("\r\n").lstrip("\ufeff")
    if not line.strip():
        return None
    if "\t" in line:
        path, label = line.split("\t", 1)
        return path.strip(), label
    row = next(csv.reader([line], skipinitialspace=True))
    if len(row) < 2:
        raise ValueError("expected 'path<TAB>label' or 'path, \"label\"'")
    return row[0].strip(), ",".join(row[1:])


def create_lmdb_from_folder(image_dir: str, label_file: str, out_dir: str, max_len: int | None = None) -> dict:
    """Returns ``{'written': n, 'bad': Counter(reason -> count), 'bad_rows': [(line_no, reason, text)]}``."""
    bad, bad_rows = Counter(), []
    written = 0
    with open(label_file, encoding="utf-8", errors="replace") as f, LMDBWriter(out_dir) as writer:
        for line_no, line in enumerate(f, 1):
            try:
                parsed = parse_label_line(line)
            except ValueError:
                parsed, reason = None, "unparsable_line"
                bad[reason] += 1
                bad_rows.append((line_no, reason, line.strip()[:80]))
                continue
            if parsed is None:
                continue
            rel, label = parsed
            reason = None
            path = rel if os.path.isabs(rel) else os.path.join(image_dir, rel)
            if not label:
                reason = "empty_label"
            elif max_len is not None and len(label) > max_len:
                reason = "label_too_long"
            elif not os.path.isfile(path):
                reason = "missing_image"
            if reason is None:
                with open(path, "rb") as img_f:
                    data = img_f.read()
                try:
                    w, h = image_size(data)
                    writer.add(data, label, w, h)
                    written += 1
                except Exception:
                    reason = "corrupt_image"
            if reason is not None:
                bad[reason] += 1
                bad_rows.append((line_no, reason, rel))
    return {"written": written, "bad": bad, "bad_rows": bad_rows}
