"""Synthetic clips as a map-style training dataset, generated on the fly (no disk, ~100 clips/s at 16x128x128)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.base import FrameSampling, GroundedDataset, select_frames
from training.data.templates import GCG_QUESTIONS, REFER_ANSWERS, REFER_VIDEO_QUESTIONS, pick
from vglamm.errors import ConfigError
from vglamm.sample import GroundedSample

from .generate import clip_seed, make_clip
from .world import WorldConfig


@dataclass(frozen=True)
class SyntheticRecord:
    index: int  # clip index in the split
    seed: int  # the clip's seed (clip_seed(seed, split, index))


class SyntheticDataset(GroundedDataset):
    """Index ``i`` is clip ``i`` of ``split``; each draw is a GCG sample (probability ``p_gcg``) or one of the
    clip's referring expressions. The clip is the same every epoch; the task, expression, frames and templates
    vary with ``(sampling.seed, epoch, i)``.
    """

    name = "synthetic"

    def __init__(self, num_videos: int, seed: int = 0, split: str = "train", config: WorldConfig | None = None,
                 sampling: FrameSampling | None = None, *, p_gcg: float = 0.4, name: str | None = None,
                 random_templates: bool = True):
        super().__init__(sampling or FrameSampling(num_frames=8), name=name, random_templates=random_templates)
        if num_videos < 1:
            raise ConfigError(f"num_videos={num_videos}: use at least one clip.")
        if not 0.0 <= p_gcg <= 1.0:
            raise ConfigError(f"p_gcg={p_gcg}: a probability must be in [0, 1].")
        self.config = config or WorldConfig()
        self.config.validate()
        self.split, self.p_gcg = split, p_gcg
        self._records = [SyntheticRecord(i, clip_seed(seed, split, i)) for i in range(num_videos)]

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        r: SyntheticRecord = self._records[i]
        clip = make_clip(r.seed, self.config, clip_id=f"{self.split}_{r.index:06d}")
        trng = self.template_rng(rng)
        if rng.random() < self.p_gcg or not clip.expressions:
            obj_ids = list(clip.caption.obj_ids)
            question, answer = pick(GCG_QUESTIONS, trng), clip.caption.grounded()
            meta = {"task": "gcg", "obj_ids": obj_ids}
        else:
            e = clip.expressions[int(rng.integers(len(clip.expressions)))]
            obj_ids = list(e.obj_ids)
            question = pick(REFER_VIDEO_QUESTIONS, trng).format(exp=e.text)
            answer = pick(REFER_ANSWERS, trng)
            meta = {"task": "refer", "kind": e.kind, "expression": e.text, "obj_ids": obj_ids}
        masks = np.stack([clip.object_masks(o) for o in obj_ids])  # (N, T, H, W)
        idx = select_frames(clip.scene.num_frames, self.sampling, masks.any(axis=(2, 3)),
                            rng if self.sampling.random else None)
        conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return GroundedSample(clip.frames[idx], conversation, masks[:, idx], idx,
                              f"{self.name}:{clip.clip_id}", meta)
