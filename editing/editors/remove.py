"""Object removal: fill the target from frames where the background behind it is visible, then inpaint."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from editing.editors.registry import register_editor


@dataclass
class RemoveOptions:
    search: int = 15             # look this many frames before and after for visible background
    inpaint_radius: int = 5      # OpenCV inpainting radius for pixels never visible in the window
    method: str = "telea"        # "telea" or "ns" (OpenCV's two inpainting methods)
    align: bool = True           # register neighbours to the frame (global shift) so a panning camera still fills
    stabilize: float = 0.5       # blend of the previous output's fill, against flicker of inpainted texture


def _shift(frame: np.ndarray, ref: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Global translation taking ``frame`` onto ``ref`` (phase correlation), only trusted when it is confident."""
    a = cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY).astype(np.float32)
    b = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    # The object moves differently from the background: hide it so it does not vote.
    mean = float(a[valid].mean()) if valid.any() else 0.0
    a = np.where(valid, a, mean).astype(np.float32)
    b = np.where(valid, b, mean).astype(np.float32)
    (dx, dy), response = cv2.phaseCorrelate(a, b)
    return (dx, dy) if response > 0.1 else (0.0, 0.0)


def _warp(img: np.ndarray, dx: float, dy: float, interp=cv2.INTER_LINEAR) -> np.ndarray:
    m = np.float32([[1, 0, -dx], [0, 1, -dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


@register_editor("remove", options=RemoveOptions)
def remove(frames: np.ndarray, masks, prompt: str | None, options: RemoveOptions) -> np.ndarray:
    """Remove the target: background from neighbouring frames where visible, OpenCV inpainting elsewhere."""
    T = frames.shape[0]
    hole_all = masks.region  # fill the dilated region so no halo of the object survives
    flag = cv2.INPAINT_TELEA if options.method == "telea" else cv2.INPAINT_NS
    out = frames.copy()
    prev_fill = None
    for t in range(T):
        hole = hole_all[t]
        if not hole.any():
            prev_fill = None
            continue
        frame = frames[t].copy()
        todo = hole.copy()
        # 1. Temporal fill: nearest frames first, so the borrowed background is the most similar.
        for d in sorted(range(-options.search, options.search + 1), key=abs):
            if d == 0 or not (0 <= t + d < T) or not todo.any():
                continue
            src, src_vis = frames[t + d], ~hole_all[t + d]
            if options.align:
                dx, dy = _shift(src, frames[t], ~(hole | hole_all[t + d]))
                if dx or dy:
                    src = _warp(src, dx, dy)
                    src_vis = _warp(src_vis.astype(np.uint8), dx, dy, cv2.INTER_NEAREST).astype(bool)
            take = todo & src_vis
            frame[take] = src[take]
            todo &= ~take
        # 2. Spatial inpainting for what was never visible.
        inpainted = todo
        if todo.any():
            frame = cv2.inpaint(frame, todo.astype(np.uint8) * 255, options.inpaint_radius, flag)
        # 3. Stabilise: inpainted texture differs frame to frame; lean on the previous fill where both are holes.
        if prev_fill is not None and options.stabilize > 0:
            both = inpainted & hole_all[t - 1]
            blend = (1 - options.stabilize) * frame[both] + options.stabilize * prev_fill[both]
            frame[both] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
        out[t] = frame
        prev_fill = frame
    return out
