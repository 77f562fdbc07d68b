"""Quality gates: the checks an annotated item must pass before it goes to review."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .parsing import GroundedCaption


@dataclass
class GateConfig:
    """min_phrases:        captions with fewer grounded phrases are dropped (the paper drops ungrounded ones).
    require_all_objects: drop items whose caption leaves an annotated object unmentioned.
    min_mask_pixels:     on a frame where an object is visible, its mask needs at least this many pixels.
    """

    min_phrases: int = 1
    require_all_objects: bool = False
    min_mask_pixels: int = 1


def check_item(caption: GroundedCaption, masks: Mapping[int, np.ndarray], visible: Mapping[int, np.ndarray],
               cfg: GateConfig | None = None) -> list[str]:
    """Reasons to drop the item (empty list: it passes).

    masks:   ``{obj_id: (T,H,W) bool}`` for the item's frames.
    visible: ``{obj_id: (T,) bool}``, frames where the input says the object is present (box or mask given).
    """
    cfg = cfg or GateConfig()
    reasons = []
    if len(caption.phrases) < cfg.min_phrases:
        reasons.append(f"caption has {len(caption.phrases)} grounded phrase(s), needs {cfg.min_phrases}")
    mentioned = sorted({o for p in caption.phrases for o in p.obj_ids})
    unknown = [o for o in mentioned if o not in masks]
    if unknown:
        reasons.append(f"caption refers to unknown object id(s) {unknown}; objects are {sorted(masks)}")
    if cfg.require_all_objects:
        missing = sorted(set(masks) - set(mentioned))
        if missing:
            reasons.append(f"object(s) {missing} are never mentioned")
    for o in mentioned:
        if o not in masks:
            continue
        area = np.asarray(masks[o]).reshape(len(masks[o]), -1).sum(axis=1)
        vis = np.asarray(visible.get(o, area > 0), dtype=bool)
        if not vis.any():
            reasons.append(f"object {o} is mentioned but visible in none of the item's frames")
            continue
        empty = np.flatnonzero(vis & (area < cfg.min_mask_pixels))
        if empty.size:
            reasons.append(f"object {o} has no mask on frame(s) {empty.tolist()} where it is visible")
    return reasons
