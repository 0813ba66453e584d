"""PNG encoding for ``log_image`` without requiring Pillow for numpy arrays."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from mltrail.core.errors import InvalidValueError


def to_png(image: Any) -> bytes:
    """Encode a PIL image or a numpy array as PNG bytes."""
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    import numpy as np

    try:
        arr = np.asarray(image)
    except Exception as exc:
        msg = f"log_image expects a numpy array or a PIL image, got {type(image).__name__}"
        raise InvalidValueError(msg) from exc
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        msg = f"log_image expects shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}"
        raise InvalidValueError(msg)
    if arr.size == 0:
        msg = "log_image got an empty image"
        raise InvalidValueError(msg)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any() or arr.min() < 0.0 or arr.max() > 1.0:
            msg = "log_image: float images must hold values in [0, 1] (no NaN)"
            raise InvalidValueError(msg)
        arr = np.round(arr * 255.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            msg = "log_image: integer images must hold values in [0, 255]"
            raise InvalidValueError(msg)
        arr = arr.astype(np.uint8)
    else:
        msg = f"log_image: unsupported dtype {arr.dtype}"
        raise InvalidValueError(msg)
    height, width = arr.shape[:2]
    color_type = {2: 0, 3: 2, 4: 6}[arr.shape[2] if arr.ndim == 3 else 2]
    rows = np.ascontiguousarray(arr).reshape(height, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 1))
        + chunk(b"IEND", b"")
    )
