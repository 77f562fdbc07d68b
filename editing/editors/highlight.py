"""Highlight the target: dim (and desaturate) the rest of the frame, and/or outline the target."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from editing.colors import find_color_name, parse_color
from editing.editors.registry import register_editor


@dataclass
class HighlightOptions:
    dim: float = 0.4             # brightness kept outside the target (1 = no dimming)
    desaturate: float = 0.5      # 0 keeps the background's colours, 1 makes it grey
    outline: bool = True         # draw a contour around the target
    outline_color: str | tuple[int, int, int] | None = None  # default: from the prompt, else yellow
    outline_width: int = 3


@register_editor("highlight", options=HighlightOptions, region="outside")
def highlight(frames: np.ndarray, masks, prompt: str | None, options: HighlightOptions):
    """Spotlight the target: the background is dimmed, the target ringed by an outline; the target is untouched."""
    out = frames.astype(np.float32)
    if options.desaturate:
        grey = out @ np.array([0.299, 0.587, 0.114], np.float32)
        out = out + options.desaturate * (grey[..., None] - out)
    out = np.clip(np.rint(out * options.dim), 0, 255).astype(np.uint8)
    alpha = masks.alpha.copy()
    if options.outline:
        colour = np.array(parse_color(options.outline_color or find_color_name(prompt or "") or "yellow"), np.uint8)
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * options.outline_width + 1,) * 2)
        # The ring lies just outside the object, so the object's own pixels stay the source's.
        obj = ~masks.region
        for t in range(frames.shape[0]):
            ring = cv2.dilate(obj[t].astype(np.uint8), k).astype(bool) & ~obj[t]
            out[t][ring] = colour
            alpha[t][ring] = 1.0  # a crisp line, not blended by the feather ramp
    return out, alpha
