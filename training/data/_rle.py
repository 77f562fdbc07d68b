"""COCO RLE bridge: uses ``vglamm.io.masks`` when present, pycocotools otherwise.

The data loaders only need encode/decode of single-frame masks; keeping the call sites behind these two
functions means switching to the shared I/O helpers is a one-line change.
"""

from __future__ import annotations

import numpy as np

try:  # the shared helpers, once the I/O module provides them
    from vglamm.io.masks import decode_rle as _decode, encode_rle as _encode  # type: ignore
except Exception:  # pragma: no cover - exercised only before vglamm.io.masks exists
    _decode = _encode = None


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> ``{"size": [h, w], "counts": str}`` (JSON-ready)."""
    if _encode is not None:
        return _encode(mask)
    from pycocotools import mask as cocomask

    rle = cocomask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE (compressed string/bytes counts or uncompressed list counts) -> (H, W) bool."""
    if _decode is not None:
        return np.asarray(_decode(rle), dtype=bool)
    from pycocotools import mask as cocomask

    counts = rle["counts"]
    h, w = rle["size"]
    if isinstance(counts, list):  # uncompressed RLE, as some datasets store it
        rle = cocomask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    elif isinstance(counts, str):
        rle = {"size": [h, w], "counts": counts.encode("ascii")}
    return cocomask.decode(rle).astype(bool)


def rle_area(rle: dict | None) -> int:
    """Foreground pixel count of a COCO RLE without decoding it (0 for None)."""
    if rle is None:
        return 0
    from pycocotools import mask as cocomask

    counts = rle["counts"]
    h, w = rle["size"]
    if isinstance(counts, list):
        return int(sum(counts[1::2]))
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return int(cocomask.area({"size": [h, w], "counts": counts}))
