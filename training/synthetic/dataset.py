"""Synthetic clips as a map-style training dataset, generated on the fly (no disk, ~100 clips/s at 16x128x128)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.base import FrameSampling, GroundedDataset, select_frames
from training.data.templates import GCG_QUESTIONS, REFER_ANSWERS, REFER_PHRASE_ANSWERS, REFER_VIDEO_QUESTIONS, pick
from vglamm.errors import ConfigError
from vglamm.sample import GroundedSample

from .generate import clip_seed, make_clip
from .language import ATTRIBUTES, matching, referred_name, stated_attributes
from .world import WorldConfig

ANSWER_STYLES = ("plain", "phrase", "name", "short_name")


@dataclass(frozen=True)
class SyntheticRecord:
    index: int  # clip index in the split
    seed: int  # the clip's seed (clip_seed(seed, split, index))


class SyntheticDataset(GroundedDataset):
    """Index ``i`` is clip ``i`` of ``split``; each draw is a GCG sample (probability ``p_gcg``) or referring
    expressions of the clip. The clip is the same every epoch; the task, expressions, frames and templates vary
    with ``(sampling.seed, epoch, i)``.

    exprs_per_sample: a referring draw asks about up to this many different objects, one question per turn of a
    multi-turn conversation (as LISA samples several questions per image): the clip is encoded once and every
    turn's ``[SEG]`` gets a mask loss, so a training step sees several objects at nearly the cost of one.
    answers: how referring answers read. ``"plain"``: ``It is [SEG].``; ``"phrase"``: the expression repeated as a
    grounded phrase, the GCG format (``Sure, <p> the red car </p> [SEG].``); ``"name"``: the referred object's full
    name (``Sure, it is <p> the large red car </p> [SEG].`` for "the car moving left"), so the language loss itself
    teaches *which* object an expression means, and every ``[SEG]`` follows a complete description of its object;
    ``"short_name"``: colour and category, size only when the expression says it or it is needed (``the red car``).
    motion_answers: the style for motion expressions only (default: ``answers``); ``"short_name"`` with
    ``answers="phrase"`` leaves "the red car" to SAM2, which sees the colour, and makes the language loss teach which
    object "the car moving left" is, which only the video shows.
    motion_share: the probability that a turn asks about its object by motion (where the object has expressions of
    both kinds); None draws uniformly from all of the clip's expressions (about half are motion ones).
    """

    name = "synthetic"

    def __init__(self, num_videos: int, seed: int = 0, split: str = "train", config: WorldConfig | None = None,
                 sampling: FrameSampling | None = None, *, p_gcg: float = 0.4, exprs_per_sample: int = 1,
                 answers: str = "plain", motion_answers: str | None = None, motion_share: float | None = None,
                 name: str | None = None, random_templates: bool = True):
        super().__init__(sampling or FrameSampling(num_frames=8), name=name, random_templates=random_templates)
        if num_videos < 1:
            raise ConfigError(f"num_videos={num_videos}: use at least one clip.")
        if not 0.0 <= p_gcg <= 1.0:
            raise ConfigError(f"p_gcg={p_gcg}: a probability must be in [0, 1].")
        if motion_share is not None and not 0.0 <= motion_share <= 1.0:
            raise ConfigError(f"motion_share={motion_share}: a probability must be in [0, 1] (or null: uniform).")
        if exprs_per_sample < 1:
            raise ConfigError(f"exprs_per_sample={exprs_per_sample}: ask at least one question per sample.")
        self.exprs_per_sample, self.answers, self.motion_answers = exprs_per_sample, answers, motion_answers or answers
        self.motion_share = motion_share
        for key in ("answers", "motion_answers"):
            if getattr(self, key) not in ANSWER_STYLES:
                raise ConfigError(f"{key}={getattr(self, key)!r}: use one of {ANSWER_STYLES}.")
        self.config = config or WorldConfig()
        self.config.validate()
        self.split, self.p_gcg = split, p_gcg
        self._records = [SyntheticRecord(i, clip_seed(seed, split, i)) for i in range(num_videos)]

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        r: SyntheticRecord = self._records[i]
        clip = make_clip(r.seed, self.config, clip_id=f"{self.split}_{r.index:06d}")
        trng = self.template_rng(rng)
        if rng.random() < self.p_gcg or not clip.expressions:
            groups = [(o,) for o in clip.caption.obj_ids]
            conversation = [{"role": "user", "content": pick(GCG_QUESTIONS, trng)},
                            {"role": "assistant", "content": clip.caption.grounded()}]
            meta = {"task": "gcg", "obj_ids": [o for (o,) in groups]}
            stated = [stated_attributes(p) for p in clip.caption.phrases]
        else:
            chosen = self._pick_expressions(clip.expressions, rng)
            groups = [tuple(e.obj_ids) for e in chosen]
            conversation, stated = [], []
            for e in chosen:
                style = self.motion_answers if e.kind == "motion" else self.answers
                if style == "name":
                    said = referred_name(clip.scene, e.obj_ids)
                elif style == "short_name":
                    said = referred_name(clip.scene, e.obj_ids, e.query)
                else:
                    said = e.text
                conversation += [{"role": "user", "content": pick(REFER_VIDEO_QUESTIONS, trng).format(exp=e.text)},
                                 {"role": "assistant", "content": pick(REFER_ANSWERS if style == "plain" else
                                                                       REFER_PHRASE_ANSWERS, trng).format(exp=said)}]
                # what the phrase says of its object: the expression's own colour / category / size when repeated
                stated.append(None if style == "plain" else
                              e.stated if said == e.text else
                              stated_attributes(said))
            meta = {"task": "refer", "kind": chosen[0].kind, "expression": chosen[0].text, "obj_ids": list(groups[0]),
                    "expressions": [(e.kind, e.text) for e in chosen]}
        # each [SEG]'s object (None for a group) and kind, for stage 0's descriptions as prompt targets (trainer)
        meta["seg_objects"] = [clip.scene.object(g[0]) if len(g) == 1 else None for g in groups]
        meta["seg_kinds"] = ["gcg"] * len(groups) if meta["task"] == "gcg" else [k for k, _ in meta["expressions"]]
        # and how to describe it: the attributes its phrase states when they single it out ("the red object"), else
        # all of them ("the car moving left" beside another car); None without a phrase, or for a group
        meta["seg_described"] = [None if st is None or len(g) != 1 else
                                 st if st and matching(clip.scene, st) == [g[0]] else
                                 {a: getattr(clip.scene.object(g[0]), a) for a in ATTRIBUTES}
                                 for st, g in zip(stated, groups)]
        # every object's visible masks at the sampled frames, for dense targets on the visual tokens (token_probe)
        meta["scene_objects"] = clip.scene.objects
        # one mask track per [SEG]: the union of the objects an expression refers to
        masks = np.stack([np.any([clip.object_masks(o) for o in g], axis=0) for g in groups])  # (N, T, H, W)
        idx = select_frames(clip.scene.num_frames, self.sampling, masks.any(axis=(2, 3)),
                            rng if self.sampling.random else None)
        meta["object_masks"] = clip.masks[:, idx]
        return GroundedSample(clip.frames[idx], conversation, masks[:, idx], idx,
                              f"{self.name}:{clip.clip_id}", meta)

    def _pick_expressions(self, expressions, rng: np.random.Generator) -> list:
        """Up to ``exprs_per_sample`` expressions in random order, each about a different object (by motion with
        probability ``motion_share`` where that is set and the object has both kinds)."""
        chosen, seen = [], set()
        for j in rng.permutation(len(expressions)):
            e = expressions[int(j)]
            if e.obj_ids in seen:
                continue
            if self.motion_share is not None:
                same = [x for x in expressions if x.obj_ids == e.obj_ids]
                if len({x.kind for x in same}) > 1:
                    kind = "motion" if rng.random() < self.motion_share else "attribute"
                    same = [x for x in same if x.kind == kind]
                    e = same[int(rng.integers(len(same)))]
            chosen.append(e)
            seen.add(e.obj_ids)
            if len(chosen) == self.exprs_per_sample:
                break
        return chosen
