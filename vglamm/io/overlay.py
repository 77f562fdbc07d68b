"""Overlay videos for people to look at: translucent coloured masks, contours, and each object's phrase."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from vglamm.errors import MaskError
from vglamm.io.masks import _check_masks, davis_palette
from vglamm.io.video import Video, write_video


def _colours(n: int) -> np.ndarray:
    # DAVIS colours 1..n: the same object gets the same colour as in the palette PNGs.
    return davis_palette()[1:n + 1].astype(np.float32)


def draw_overlay(frame: np.ndarray, masks: Sequence[np.ndarray], phrases: Sequence[str | None] | None = None, *,
                 alpha: float = 0.5, contour: int = 2) -> np.ndarray:
    """One frame (H, W, 3) uint8 with each (H, W) bool mask tinted, outlined, and labelled with its phrase.

    The label sits just above the top of the object (inside the frame), on a dark box so it stays readable.
    """
    out = frame.astype(np.float32)
    colours = _colours(max(len(masks), 1))
    for m, c in zip(masks, colours):
        out[m] = (1 - alpha) * out[m] + alpha * c
    out = out.round().clip(0, 255).astype(np.uint8)
    for i, (m, c) in enumerate(zip(masks, colours)):
        if not m.any():
            continue
        colour = tuple(int(v) for v in c)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, contour, lineType=cv2.LINE_AA)
        phrase = phrases[i] if phrases is not None else None
        if phrase:
            _label(out, phrase, m, colour)
    return out


def _label(img: np.ndarray, text: str, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    h, w = img.shape[:2]
    scale = max(0.35, min(h, w) / 600)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ys, xs = np.nonzero(mask)
    x = int(np.clip(xs.min(), 0, max(0, w - tw - 4)))
    y = int(np.clip(ys.min() - 4, th + 4, h - base - 1))
    # The box carries the object's colour and the text is black or white, whichever reads on it: dark palette
    # colours (the first DAVIS colour is (128, 0, 0)) are unreadable as text on black.
    cv2.rectangle(img, (x, y - th - 4), (x + tw + 4, y + base), colour, thickness=-1)
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
    cv2.putText(img, text, (x + 2, y - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)


def write_overlay_video(path: str | os.PathLike, frames, objects: Sequence[tuple[str | None, np.ndarray]],
                        fps: float | None = None, *, alpha: float = 0.5, contour: int = 2,
                        audio_from: str | os.PathLike | None = None, crf: int = 18) -> Path:
    """Write an MP4 showing ``objects`` = [(phrase, masks (T, H, W) bool), ...] over ``frames`` (T, H, W, 3).

    ``frames`` may be a ``Video`` (its fps is used when ``fps`` is None). Frames are drawn one at a time while
    encoding. Masks must match the frames in count and size.
    """
    if isinstance(frames, Video):
        fps = fps if fps is not None else frames.fps
        frames = frames.frames
    if fps is None:
        raise MaskError("write_overlay_video needs fps (or a Video, whose fps is used).")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MaskError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}.")
    phrases = [p for p, _ in objects]
    masks = [_check_masks(m, f"masks of {p!r}", size=frames.shape[1:3]) for p, m in objects]
    for p, m in zip(phrases, masks):
        if len(m) != len(frames):
            raise MaskError(f"masks of {p!r} have {len(m)} frames but the video has {len(frames)}.")

    def drawn() -> Iterator[np.ndarray]:
        for t, frame in enumerate(frames):
            yield draw_overlay(frame, [m[t] for m in masks], phrases, alpha=alpha, contour=contour)

    return write_video(path, drawn(), fps, audio_from=audio_from, crf=crf)
