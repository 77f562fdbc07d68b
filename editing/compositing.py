"""Compositing: put edited pixels back over the source, exactly unchanged outside the edit region."""

from __future__ import annotations

import numpy as np


def composite(source: np.ndarray, edited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend ``edited`` over ``source`` with per-pixel ``alpha`` (T,H,W) in [0, 1].

    Where alpha is 0 the result is the source pixel bit for bit (no float round trip), where it is 1 it is
    the edited pixel; in between a rounded linear blend. ``edited`` may be RGB or RGBA; for RGBA the source
    gets an opaque alpha channel first.
    """
    if edited.shape[-1] == 4 and source.shape[-1] == 3:
        source = np.concatenate([source, np.full(source.shape[:-1] + (1,), 255, np.uint8)], axis=-1)
    if edited.shape != source.shape:
        raise ValueError(f"edited frames {edited.shape} do not match the source {source.shape}")
    out = source.copy()
    soft = (alpha > 0) & (alpha < 1)
    hard = alpha >= 1
    out[hard] = edited[hard]
    a = alpha[soft][:, None]
    out[soft] = np.clip(np.rint(source[soft] * (1.0 - a) + edited[soft] * a), 0, 255).astype(np.uint8)
    return out


def changed_outside(source: np.ndarray, output: np.ndarray, region: np.ndarray) -> int:
    """Number of pixels outside ``region`` whose value differs from the source (0 when compositing is exact)."""
    diff = np.any(source[..., :3] != output[..., :3], axis=-1)
    return int(np.count_nonzero(diff & ~region))
