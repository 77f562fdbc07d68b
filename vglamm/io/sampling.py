"""Which source frames to read: uniform, fixed-rate and per-segment sampling.

Every function returns a numpy ``int64`` array of indices into the source video. When more frames are asked
for than the source holds, the last frame is repeated (the reference pads clips the same way), so the result
always has the requested length.
"""

from __future__ import annotations

import math

import numpy as np

from vglamm.errors import ConfigError


def _check_total(n_total: int) -> None:
    if n_total < 1:
        raise ConfigError(f"cannot sample from a video with {n_total} frames; the video must have at least one.")


def uniform_indices(n_total: int, n: int) -> np.ndarray:
    """``n`` indices spread evenly over ``[0, n_total)``, first and last frame included (linspace).

    With ``n >= n_total`` every frame is taken once and the last one is repeated up to ``n``.
    """
    _check_total(n_total)
    if n < 1:
        raise ConfigError(f"number of frames to sample must be >= 1, got {n}.")
    if n >= n_total:
        return np.concatenate([np.arange(n_total), np.full(n - n_total, n_total - 1)]).astype(np.int64)
    return np.round(np.linspace(0, n_total - 1, n)).astype(np.int64)


def fps_indices(n_total: int, src_fps: float, fps: float, max_frames: int | None = None) -> np.ndarray:
    """Indices that resample a ``src_fps`` video to ``fps``: the frame shown at each time ``k / fps``.

    Output times cover the source duration ``n_total / src_fps`` (at least one frame). Asking for a rate above
    the source rate repeats frames. With ``max_frames``, that many are then picked uniformly among the
    resampled frames (the reference: 1 fps, at most 64 frames).
    """
    _check_total(n_total)
    if not (src_fps > 0 and fps > 0):
        raise ConfigError(f"frame rates must be positive, got source {src_fps} and target {fps}.")
    duration = n_total / src_fps
    n_out = max(1, math.ceil(duration * fps - 1e-9))
    # The small epsilon keeps k/fps*src_fps that is an integer up to float error (e.g. 29.97 -> 1) on that frame.
    idx = np.floor(np.arange(n_out) * (src_fps / fps) + 1e-6).astype(np.int64)
    idx = np.minimum(idx, n_total - 1)
    if max_frames is not None and len(idx) > max_frames:
        idx = idx[uniform_indices(len(idx), max_frames)]
    return idx


def segment_indices(n_total: int, num_segments: int, frames_per_segment: int) -> np.ndarray:
    """``(num_segments, frames_per_segment)`` indices: the clip sampled uniformly, cut into consecutive chunks.

    This is how the video encoder is fed: e.g. 16 uniform frames as 4 chunks of 4, each chunk encoded jointly.
    """
    if num_segments < 1 or frames_per_segment < 1:
        raise ConfigError(f"segments and frames per segment must be >= 1, got {num_segments} x {frames_per_segment}.")
    return uniform_indices(n_total, num_segments * frames_per_segment).reshape(num_segments, frames_per_segment)
