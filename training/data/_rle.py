"""COCO RLE for the loaders: ``vglamm.io.masks`` with dataset-flavoured errors, plus area without decoding."""

from __future__ import annotations

import numpy as np

from vglamm.errors import DataFormatError, MaskError
from vglamm.io.masks import decode_rle as _decode_rle
from vglamm.io.masks import encode_rle, masks_to_rles  # noqa: F401  (re-exported for the writers)


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE -> (H, W) bool; a malformed RLE in a dataset is a DataFormatError (the record is bad)."""
    try:
        return _decode_rle(rle)
    except MaskError as e:
        raise DataFormatError(str(e)) from e


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
