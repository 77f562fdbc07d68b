"""Redaction editors: ``blur`` and ``pixelate`` the target (faces, plates, screens)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from editing.editors._util import mask_box, object_scale
from editing.editors.registry import register_editor


@dataclass
class BlurOptions:
    radius: int | None = None    # Gaussian sigma in pixels; None: a fifth of the object's size (min 6)


@dataclass
class PixelateOptions:
    block: int | None = None     # block size in pixels; None: a tenth of the object's size (min 6)


@register_editor("blur", options=BlurOptions)
def blur(frames: np.ndarray, masks, prompt: str | None, options: BlurOptions) -> np.ndarray:
    """Gaussian-blur the target strongly enough that its details are unreadable."""
    sigma = options.radius or max(6, int(round(object_scale(masks.target) / 5)))
    H, W = frames.shape[1:3]
    out = frames.copy()
    for t, frame in enumerate(frames):
        box = mask_box(masks.region[t])
        if box is None:
            continue
        # Blur only around the object (3 sigma of context), and at reduced scale: a wide Gaussian needs no
        # full-resolution detail, and this is ~10x faster than blurring the whole frame.
        m = 3 * sigma
        y0, y1, x0, x1 = max(0, box[0] - m), min(H, box[1] + m), max(0, box[2] - m), min(W, box[3] + m)
        patch = frame[y0:y1, x0:x1]
        f = max(1, sigma // 4)
        small = cv2.resize(patch, (max(1, patch.shape[1] // f), max(1, patch.shape[0] // f)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / f, borderType=cv2.BORDER_REFLECT)
        out[t, y0:y1, x0:x1] = cv2.resize(small, (patch.shape[1], patch.shape[0]), interpolation=cv2.INTER_LINEAR)
    return out


@register_editor("pixelate", options=PixelateOptions)
def pixelate(frames: np.ndarray, masks, prompt: str | None, options: PixelateOptions) -> np.ndarray:
    """Replace the target with coarse blocks (mosaic); the grid is fixed so blocks do not crawl between frames."""
    block = options.block or max(6, int(round(object_scale(masks.target) / 10)))
    T, H, W, _ = frames.shape
    small = (max(1, W // block), max(1, H // block))
    out = frames.copy()
    for t, frame in enumerate(frames):
        if masks.region[t].any():
            coarse = cv2.resize(frame, small, interpolation=cv2.INTER_AREA)
            out[t] = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_NEAREST)
    # Hard block edges read as redaction; a feathered edge would show the original through the blend.
    return out, masks.region.astype(np.float32)
