"""Redaction editors: ``blur`` and ``pixelate`` the target (faces, plates, screens)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from editing.editors._util import object_scale
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
    out = frames.copy()
    for t, frame in enumerate(frames):
        if masks.region[t].any():
            out[t] = cv2.GaussianBlur(frame, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
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
