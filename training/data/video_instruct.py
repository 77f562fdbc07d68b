"""Conversation-only video instruction data (VideoInstruct-100K style): no masks, N = 0.

JSON: a list of ``{"video_id": "v_xxx", "q": question, "a": answer}`` (``question`` / ``answer`` and
``video`` are accepted too). Videos are ``<videos_root>/<video_id>.<mp4|mkv|webm|avi|mov>`` or frame folders
``<videos_root>/<video_id>/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vglamm.errors import DataFormatError
from vglamm.sample import GroundedSample

from .base import FrameSampling, GroundedDataset, load_json, probe_num_frames, read_video_frames, select_frames

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


@dataclass
class InstructRecord:
    video_id: str
    question: str
    answer: str


class VideoInstructDataset(GroundedDataset):
    """Video question answering without grounding: frames sampled uniformly, masks of shape (0, T, H, W)."""

    name = "video_instruct"

    def __init__(self, json_path: str | os.PathLike, videos_root: str | os.PathLike | None = None,
                 sampling: FrameSampling | None = None, *, name: str | None = None, random_templates: bool = False):
        super().__init__(sampling, name=name, random_templates=random_templates)
        self.json_path = Path(json_path)
        self.videos_root = Path(videos_root) if videos_root else self.json_path.parent / "videos"
        doc = load_json(self.json_path)
        if not isinstance(doc, list):
            raise DataFormatError(f"{self.json_path}: expected a JSON list of {{video_id, q, a}} records")
        for k, d in enumerate(doc):
            try:
                vid = d.get("video_id", d.get("video"))
                q, a = d.get("q", d.get("question")), d.get("a", d.get("answer"))
            except AttributeError:
                raise DataFormatError(f"{self.json_path}: record {k} is not an object") from None
            if not vid or not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
                raise DataFormatError(f"{self.json_path}: record {k} needs a video_id and non-empty q and a")
            if "[SEG]" in a:
                raise DataFormatError(f"{self.json_path}: record {k}: answer contains [SEG] but this data has no masks")
            self._records.append(InstructRecord(str(vid), q.strip(), a.strip()))

    def video_path(self, video_id: str) -> Path:
        for ext in VIDEO_EXTS:
            p = self.videos_root / f"{video_id}{ext}"
            if p.exists():
                return p
        if (self.videos_root / video_id).is_dir():
            return self.videos_root / video_id
        raise DataFormatError(f"{self.json_path}: video {video_id} not found in {self.videos_root} "
                              f"(tried {', '.join(VIDEO_EXTS)} and a frame folder)")

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        r: InstructRecord = self._records[i]
        path = self.video_path(r.video_id)
        idx = select_frames(probe_num_frames(path), self.sampling, None, rng if self.sampling.random else None)
        frames = read_video_frames(path, idx)
        conversation = [{"role": "user", "content": r.question}, {"role": "assistant", "content": r.answer}]
        masks = np.zeros((0, len(idx)) + frames.shape[1:3], dtype=bool)
        return GroundedSample(frames, conversation, masks, idx, f"{self.name}:{r.video_id}", {"video_id": r.video_id})
