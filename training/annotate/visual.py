"""What the multimodal model is shown: object crops, frames with labelled boxes."""

from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

# distinct, saturated colours (RGB); object k gets PALETTE[k % len]
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (255, 225, 25), (0, 128, 128)]
RED = (255, 0, 0)


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight [x0, y0, x1, y1] (x1, y1 exclusive) of a (H,W) mask; None when empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


def crop(frame: np.ndarray, box, *, pad: float = 0.15, size: int = 224) -> np.ndarray:
    """The box enlarged by ``pad`` of its size on each side, clipped to the frame, resized to ``size`` square."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    px, py = (x1 - x0) * pad, (y1 - y0) * pad
    x0, y0 = int(max(0, np.floor(x0 - px))), int(max(0, np.floor(y0 - py)))
    x1, y1 = int(min(w, np.ceil(x1 + px))), int(min(h, np.ceil(y1 + py)))
    patch = frame[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=cv2.INTER_LINEAR)


def draw_boxes(frame: np.ndarray, boxes: Mapping[int, np.ndarray], colors: Mapping[int, tuple] | None = None
               ) -> np.ndarray:
    """A copy of ``frame`` with each finite box drawn and labelled with its object id."""
    out = np.ascontiguousarray(frame.copy())
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 160))
    scale = max(0.3, min(h, w) / 400)
    for oid, box in boxes.items():
        box = np.asarray(box, dtype=float)
        if not np.isfinite(box).all():
            continue
        color = (colors or {}).get(oid, PALETTE[oid % len(PALETTE)])
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, thick)
        label = str(oid)
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y0 - 2 if y0 - th - 2 >= 0 else min(h - 1, y0 + th + 2)
        cv2.rectangle(out, (x0, ty - th - 1), (x0 + tw + 1, ty + 1), color, -1)
        cv2.putText(out, label, (x0 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def pick(n_total: int, n: int) -> np.ndarray:
    """Up to ``n`` evenly spread positions out of ``n_total``."""
    if n_total <= n:
        return np.arange(n_total)
    return np.floor((np.arange(n) + 0.5) * n_total / n).astype(int)
