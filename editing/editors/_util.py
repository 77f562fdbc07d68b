"""Small helpers shared by editors."""

from __future__ import annotations

import numpy as np


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) bounding box of a 2-D or (T,H,W) mask, or None when empty."""
    if mask.ndim == 3:
        mask = mask.any(axis=0)
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if ys.size == 0:
        return None
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def object_scale(masks: np.ndarray) -> float:
    """A typical object size in pixels (sqrt of its mean area over frames where present)."""
    areas = masks.reshape(masks.shape[0], -1).sum(axis=1)
    areas = areas[areas > 0]
    return float(np.sqrt(areas.mean())) if areas.size else 0.0
