"""Decoding, ratio-bucket sizes, resizing and normalisation of word images."""
from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["BASE_SIZES", "bucket_size", "aspect_bucket", "decode_image", "DecodeError", "to_tensor"]

# (W, H) for aspect ratios 1..4; ratio r >= 5 uses (32 r, 32). As in SVTRv2's multi-size resizing.
BASE_SIZES = {1: (64, 64), 2: (96, 48), 3: (112, 40), 4: (128, 32)}
MAX_PIXELS = 50_000_000


class DecodeError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


def bucket_size(ratio: int) -> tuple[int, int]:
    return BASE_SIZES[ratio] if ratio in BASE_SIZES else (32 * ratio, 32)


def aspect_bucket(width: float, height: float, max_ratio: int) -> int:
    """round(w / h) clipped to [1, max_ratio]."""
    if width <= 0 or height <= 0:
        return 1
    return int(min(max(round(width / height), 1), max_ratio))


def decode_image(data: bytes) -> np.ndarray:
    """Encoded bytes -> RGB uint8 (H, W, 3). Handles palette, alpha, CMYK, 16-bit, grey and EXIF
    orientation; raises DecodeError with a reason for anything unusable."""
    if not data:
        raise DecodeError("empty_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise DecodeError("image_too_large", f"{img.width}x{img.height}")
            img.load()
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecodeError("image_too_large", f"over {MAX_PIXELS} pixels") from None
    except Exception as e:  # PIL raises many types for corrupt or truncated data
        raise DecodeError("corrupt_image", type(e).__name__) from None
    if img.width < 2 or img.height < 2:
        raise DecodeError("image_too_small", f"{img.width}x{img.height}")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:
        pass  # a broken EXIF block: keep the stored orientation
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 0 else 1.0
        img = Image.fromarray((arr * (255.0 / hi)).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"))


def to_tensor(img: np.ndarray, width: int, height: int) -> torch.Tensor:
    """Resize (bicubic, no aspect padding: stretched as in SVTRv2) and map to [-1, 1], (3, H, W)."""
    if img.shape[0] != height or img.shape[1] != width:
        interp = cv2.INTER_AREA if img.shape[0] > 2 * height else cv2.INTER_CUBIC
        img = cv2.resize(img, (width, height), interpolation=interp)
    if not (img.flags.writeable and img.flags.c_contiguous):
        img = np.array(img)
    t = torch.from_numpy(img).permute(2, 0, 1).float()
    return t.div_(127.5).sub_(1.0)
