"""Mask conditioning: turn raw grounding masks into what editors and compositing need.

Raw masks from a segmenter have specks, hard aliased edges and frame-to-frame flicker. Editors get a
:class:`ConditionedMasks` holding three views of the same object:

* ``target``  (T,H,W) bool: the cleaned, temporally smoothed object mask;
* ``region``  (T,H,W) bool: ``target`` dilated, so the object's edge pixels are regenerated too; this is
  the only area an "inside" editor may change;
* ``alpha``   (T,H,W) float32 in [0, 1]: feathered blend weight, exactly 0 outside ``region`` and exactly 1
  on ``target``, so compositing is exact outside and seamless at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vglamm.errors import MaskError


@dataclass
class MaskConditioningConfig:
    """How raw masks are cleaned before editing. Distances are in pixels of the source video."""

    min_area: int = 16          # connected components smaller than this are specks and are dropped
    fill_holes_area: int = 16   # holes smaller than this inside the object are filled
    temporal_window: int = 3    # majority vote over this many frames (odd; 1 disables) against flicker
    dilate: int = 4             # grow the mask so edges are regenerated, not left as a halo of old colour
    feather: int = 3            # width of the soft blend band added around the dilated mask


@dataclass
class ConditionedMasks:
    """The three views of one object's masks that editors use (see module docstring)."""

    target: np.ndarray
    region: np.ndarray
    alpha: np.ndarray
    feather: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.target.shape)

    def inverted(self) -> "ConditionedMasks":
        """The background as the edit area, with the object itself protected exactly.

        For editors that change everything except the target (background replacement, highlight): the
        region is everything outside ``target``; alpha ramps from 0 on the object to 1 a feather width away.
        """
        region = ~self.target
        # The soft ramp lies outside the object only, so no object pixel is ever touched.
        alpha = 1.0 - feather_alpha(self.target, dilate_masks(self.target, self.feather))
        return ConditionedMasks(target=region, region=region, alpha=alpha, feather=self.feather)

    def to_pil(self) -> list:
        """Per-frame PIL "L" images of ``region``: white (255) = regenerate, black = keep (WanVACE's convention)."""
        from PIL import Image

        return [Image.fromarray(m.astype(np.uint8) * 255, mode="L") for m in self.region]


def validate_masks(masks, video_shape: tuple[int, ...]) -> np.ndarray:
    """Check masks against the video's (T,H,W[,3]) shape and return them as (T,H,W) bool."""
    masks = np.asarray(masks)
    if masks.ndim == 4 and masks.shape[0] == 1:
        masks = masks[0]  # one object given as (1,T,H,W)
    if masks.ndim == 2:
        masks = np.broadcast_to(masks, (video_shape[0],) + masks.shape)
    if masks.ndim != 3:
        raise MaskError(f"masks must have shape (T,H,W); got {masks.shape}. Pass one mask per frame of the video.")
    if tuple(masks.shape) != tuple(video_shape[:3]):
        raise MaskError(f"mask shape {tuple(masks.shape)} does not match the video's (T,H,W) {tuple(video_shape[:3])}. "
                        "Give one mask per source frame at the video's resolution (resize or re-ground them).")
    if masks.dtype != bool:
        # 0/255 PNG-style masks, 0/1 integers, or probabilities: anything past the midpoint is the object.
        masks = masks > (127 if masks.dtype == np.uint8 and masks.max() > 1 else 0.5)
    if not masks.any():
        raise MaskError("the masks are empty on every frame: nothing to edit. Check the target or the mask file.")
    return np.ascontiguousarray(masks)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def clean_masks(masks: np.ndarray, min_area: int = 16, fill_holes_area: int = 16) -> np.ndarray:
    """Drop connected components smaller than ``min_area`` and fill holes smaller than ``fill_holes_area``."""
    out = np.empty_like(masks)
    for t, m in enumerate(masks):
        m8 = m.astype(np.uint8)
        if min_area > 0:
            n, labels, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
            keep = np.zeros(n, bool)
            keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
            m8 = keep[labels].astype(np.uint8)
        if fill_holes_area > 0:
            # Holes are background components not touching the border; small ones are segmentation noise.
            n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - m8, connectivity=4)
            h, w = m8.shape
            x, y, bw, bh = (stats[:, i] for i in range(4))
            interior = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
            fill = interior & (stats[:, cv2.CC_STAT_AREA] < fill_holes_area)
            fill[0] = False  # label 0 is the object itself
            m8 = m8 | fill[labels].astype(np.uint8)
        out[t] = m8.astype(bool)
    return out


def temporal_smooth(masks: np.ndarray, window: int = 3) -> np.ndarray:
    """Per-pixel majority vote over a centred window of frames, so a pixel does not flicker in and out."""
    if window <= 1 or masks.shape[0] < 2:
        return masks
    half = window // 2
    counts = np.cumsum(np.concatenate([np.zeros((1,) + masks.shape[1:], np.int32), masks.astype(np.int32)]), axis=0)
    t = np.arange(masks.shape[0])
    lo, hi = np.clip(t - half, 0, None), np.clip(t + half + 1, None, masks.shape[0])
    votes = counts[hi] - counts[lo]
    n = (hi - lo)[:, None, None]
    # A tie (only at the clip's ends, where the window is cut short) keeps the frame's own value.
    smoothed = np.where(votes * 2 == n, masks, votes * 2 > n)
    # Never lose a frame entirely: if smoothing emptied a frame that had an object, keep the original.
    empty = ~smoothed.any(axis=(1, 2)) & masks.any(axis=(1, 2))
    smoothed[empty] = masks[empty]
    return smoothed


def dilate_masks(masks: np.ndarray, radius: int) -> np.ndarray:
    """Grow each frame's mask by ``radius`` pixels (elliptical structuring element)."""
    if radius <= 0:
        return masks.copy()
    k = _disk(radius)
    return np.stack([cv2.dilate(m.astype(np.uint8), k).astype(bool) for m in masks])


def feather_alpha(core: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Soft alpha: exactly 1 on ``core``, a linear ramp across the band ``region \\ core``, exactly 0 outside.

    The ramp is d_out / (d_in + d_out), with d_in the distance to ``core`` and d_out the distance to the
    outside of ``region``, so it is smooth whatever the band's local width.
    """
    alpha = np.zeros(core.shape, np.float32)
    for t, (c, r) in enumerate(zip(core, region)):
        if not c.any():
            continue
        d_in = cv2.distanceTransform((~c).astype(np.uint8), cv2.DIST_L2, 3)
        d_out = cv2.distanceTransform(r.astype(np.uint8), cv2.DIST_L2, 3)
        ramp = d_out / np.maximum(d_in + d_out, 1e-6)
        alpha[t] = np.where(c, 1.0, np.where(r, ramp, 0.0))
    return alpha


def condition_masks(masks: np.ndarray, config: MaskConditioningConfig | None = None) -> ConditionedMasks:
    """Clean → temporally smooth → dilate → feather. ``masks`` must already be validated (T,H,W) bool."""
    cfg = config or MaskConditioningConfig()
    target = clean_masks(masks, cfg.min_area, cfg.fill_holes_area)
    if not target.any():
        # Every component counted as a speck: the object is just tiny, so keep it rather than edit nothing.
        target = masks.copy()
    target = temporal_smooth(target, cfg.temporal_window)
    core = dilate_masks(target, cfg.dilate)          # fully replaced: the object plus its edge pixels
    region = dilate_masks(core, cfg.feather)         # core plus the blend band; nothing outside changes
    alpha = feather_alpha(core, region)
    return ConditionedMasks(target=target, region=region, alpha=alpha, feather=cfg.feather)
