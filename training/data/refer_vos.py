"""Ref-YouTube-VOS and Ref-DAVIS17 (the ReferFormer layout): palette PNG masks + meta expressions JSON.

Layout::

    <root>/meta_expressions/<split>/meta_expressions.json
        {"videos": {<video>: {"frames": [<frame>, ...], "expressions": {<exp_id>: {"exp": str, "obj_id": "1"}}}}}
    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/Annotations/<video>/<frame>.png   palette PNG, pixel value = object id, 0 background

The target of an expression is the pixels labelled with its ``obj_id``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vglamm.errors import DataFormatError
from vglamm.sample import GroundedSample

from .base import FrameSampling, GroundedDataset, load_json, read_frames, read_index_png, select_frames
from .mevis import find_frame
from .templates import REFER_ANSWERS, REFER_VIDEO_QUESTIONS, pick


@dataclass
class ReferVOSRecord:
    video: str
    exp_id: str
    exp: str
    obj_id: int
    frames: list[str]


class ReferVOSDataset(GroundedDataset):
    """Referring video object segmentation samples from palette-PNG datasets ("It is [SEG]." answers)."""

    name = "refer_vos"

    def __init__(self, root: str | os.PathLike, split: str = "train", sampling: FrameSampling | None = None, *,
                 name: str | None = None, random_templates: bool = False):
        super().__init__(sampling, name=name, random_templates=random_templates)
        self.root = Path(root)
        self.split = split
        meta_path = self.root / "meta_expressions" / split / "meta_expressions.json"
        self.split_dir = self.root / split
        meta = load_json(meta_path)
        try:
            for vid, v in meta["videos"].items():
                for exp_id, e in v["expressions"].items():
                    if "obj_id" not in e:
                        raise DataFormatError(f"{meta_path}: video {vid} expression {exp_id} has no obj_id "
                                              f"(a test split without masks cannot be trained on)")
                    self._records.append(ReferVOSRecord(vid, str(exp_id), str(e["exp"]), int(e["obj_id"]),
                                                        list(v["frames"])))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataFormatError(f"{meta_path}: malformed meta expressions (missing or bad field {err})") from err
        self._labels: dict[str, np.ndarray] = {}  # per video: object ids present per frame, for frame sampling

    def _label_map(self, video: str, frame: str) -> np.ndarray:
        return read_index_png(find_frame(self.split_dir / "Annotations" / video, frame))

    def _presence(self, r: ReferVOSRecord) -> np.ndarray:
        key = r.video
        if key not in self._labels:  # (T, max_id+1) bool, computed once per video
            maps = [self._label_map(r.video, f) for f in r.frames]
            top = max(int(m.max()) for m in maps) if maps else 0
            table = np.zeros((len(maps), max(top, 255) + 1), dtype=bool)
            for t, m in enumerate(maps):
                table[t, np.unique(m)] = True
            self._labels[key] = table
        table = self._labels[key]
        return table[:, r.obj_id][None] if r.obj_id < table.shape[1] else np.zeros((1, len(r.frames)), bool)

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        r: ReferVOSRecord = self._records[i]
        idx = select_frames(len(r.frames), self.sampling, self._presence(r), rng if self.sampling.random else None)
        frames = read_frames([find_frame(self.split_dir / "JPEGImages" / r.video, r.frames[t]) for t in idx])
        masks = np.stack([self._label_map(r.video, r.frames[t]) == r.obj_id for t in idx])[None]
        if masks.shape[2:] != frames.shape[1:3]:
            raise DataFormatError(f"{self.split_dir / 'Annotations' / r.video}: masks are {masks.shape[2:]} but "
                                  f"frames are {frames.shape[1:3]}")
        trng = self.template_rng(rng)
        conversation = [{"role": "user", "content": pick(REFER_VIDEO_QUESTIONS, trng).format(exp=r.exp.strip())},
                        {"role": "assistant", "content": pick(REFER_ANSWERS, trng)}]
        return GroundedSample(frames, conversation, masks, idx, f"{self.name}:{r.video}/{r.exp_id}",
                              {"video": r.video, "exp_id": r.exp_id, "expression": r.exp, "obj_id": r.obj_id})


class RefYouTubeVOSDataset(ReferVOSDataset):
    name = "ref_youtube_vos"


class RefDAVIS17Dataset(ReferVOSDataset):
    """Ref-DAVIS17 converted to the Ref-YouTube-VOS layout (ReferFormer's ``ref-davis``); its split is ``valid``."""

    name = "ref_davis17"

    def __init__(self, root: str | os.PathLike, split: str = "valid", sampling: FrameSampling | None = None, **kw):
        super().__init__(root, split, sampling, **kw)
