"""Spatio-temporal grounding (VidSTG / HC-STVG), as VideoGLaMM's ``eval_grounding.py`` scores it.

Predicted masks become one box per frame; on every frame of the ground-truth tube the box IoU with the
ground-truth box is taken (a frame whose predicted mask is empty scores 0); the mean over the tube is the video's
``gt_viou``; results are averaged per question type (declarative / interrogative), with ``gt_viou@0.3/0.5`` the
fraction of videos above those thresholds.

Boxes are ``[x_min, y_min, x_max, y_max]`` in pixel coordinates, made from masks as torchvision's
``masks_to_boxes`` does (max index, no +1) and compared with continuous-area IoU, as the reference does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from vglamm.errors import DataFormatError, MaskError

THRESHOLDS = (0.3, 0.5)


def masks_to_boxes(masks) -> np.ndarray:
    """(T,H,W) masks -> (T,4) boxes ``[x_min, y_min, x_max, y_max]``; NaN rows for empty frames."""
    m = np.asarray(masks) > 0
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise MaskError(f"masks must be (T,H,W); got {m.shape}.")
    rows, cols = m.any(axis=2), m.any(axis=1)
    out = np.full((m.shape[0], 4), np.nan)
    has = rows.any(axis=1)
    if has.any():
        H, W = m.shape[1:]
        r, c = rows[has], cols[has]
        out[has, 0] = np.argmax(c, axis=1)
        out[has, 1] = np.argmax(r, axis=1)
        out[has, 2] = W - 1 - np.argmax(c[:, ::-1], axis=1)
        out[has, 3] = H - 1 - np.argmax(r[:, ::-1], axis=1)
    return out


def box_iou(a, b) -> np.ndarray:
    """Row-wise IoU of (N,4) boxes ``a`` and ``b`` (continuous areas); 0 where either box is NaN or the union 0."""
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter
    ok = np.isfinite(union) & (union > 0)
    out = np.zeros(len(a))
    out[ok] = inter[ok] / union[ok]
    return out


@dataclass
class GroundingRecord:
    """One question: predicted masks on the sampled frames, and the ground-truth boxes of the tube's frames.

    ``gt_boxes`` maps a frame index (into ``pred_masks``) to its ``[x_min, y_min, x_max, y_max]`` box.
    """

    video_id: str
    pred_masks: np.ndarray
    gt_boxes: Mapping[int, "np.ndarray | list[float]"]
    qtype: str = "interrogative"


def grounding_video_iou(pred_masks, gt_boxes: Mapping) -> tuple[float, dict[int, float]]:
    """``gt_viou`` of one video (mean box IoU over the tube's frames) and the IoU per tube frame."""
    pred_masks = np.asarray(pred_masks)
    frames = sorted(int(t) for t in gt_boxes)
    if not frames:
        raise DataFormatError("the ground-truth tube has no frame: give at least one frame with a box.")
    if frames[-1] >= len(pred_masks) or frames[0] < 0:
        raise MaskError(f"ground-truth tube frames reach {frames[-1]} but there are {len(pred_masks)} predicted "
                        "frames: give one predicted mask per sampled frame.")
    pred = masks_to_boxes(pred_masks[frames])
    gt = np.array([np.asarray(gt_boxes[t], np.float64).reshape(4) for t in frames])
    ious = box_iou(pred, gt)
    return float(ious.mean()), dict(zip(frames, ious.tolist()))


def evaluate_grounding(records: Iterable[GroundingRecord], *, progress: bool = False) -> dict:
    """Mean ``gt_viou`` and ``gt_viou@0.3/0.5`` per question type, plus the per-video values."""
    it = records
    if progress:
        from tqdm import tqdm
        it = tqdm(records, desc="grounding", unit="video")
    per_video, by_type = {}, defaultdict(list)
    for r in it:
        viou, _ = grounding_video_iou(r.pred_masks, r.gt_boxes)
        per_video[r.video_id] = {"gt_viou": viou, "qtype": r.qtype}
        by_type[r.qtype].append(viou)
    out: dict = {}
    for qtype, values in sorted(by_type.items()):
        v = np.asarray(values)
        out[qtype] = {"mIoU": float(v.mean()), "num_videos": len(v),
                      **{f"gt_viou@{t}": float(np.mean(v > t)) for t in THRESHOLDS}}
    out["per_video"] = per_video
    return out
