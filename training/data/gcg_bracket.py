"""GCG captions in the ``[phrase](id, id)`` style (mevis_gcg, ytvos_gcg, vidstg_gcg, hcstvg_gcg).

A caption such as ``"[A man](1) hands [the two cups](2, 3) to [a woman](4)."`` becomes the answer
``"<p> A man </p> [SEG] hands <p> the two cups </p> [SEG] to <p> a woman </p> [SEG]."``; the mask of a phrase is
the union of its objects' masks. Captions come from a folder of ``<video>.json`` files (``{"caption": ...}``) or
one JSON (``{video: caption | {"caption": ...}}`` or ``[{"video": ..., "caption": ...}]``). Masks come from one of:

* ``MevisMasks(split_dir)``: MeViS ``JPEGImages`` + ``mask_dict.json``; object ids are MeViS ``obj_id``s.
* ``PaletteMasks(split_dir)``: YouTube-VOS ``JPEGImages/<video>`` + palette ``Annotations/<video>/<frame>.png``.
* ``PngDirMasks(split_dir)``: VidSTG / HC-STVG ``<video>/frames/*`` + ``<video>/masks/<obj:03d>/<frame>.png``
  (0/255; a missing file means the object is absent in that frame).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vglamm.errors import DataFormatError
from vglamm.sample import GroundedSample

from ._rle import decode_rle, rle_area
from .base import (FrameSampling, GroundedDataset, list_frame_files, load_json, read_frames,
                   read_index_png, select_frames)
from .mevis import find_frame, mevis_object_annos
from .templates import GCG_QUESTIONS, pick
from .video_gcg import BRACKET_PHRASE


def render_bracket_caption(caption: str, where: str = "caption") -> tuple[str, list[list[int]]]:
    """``[phrase](ids)`` caption -> (answer with ``<p> phrase </p> [SEG]``, object ids per ``[SEG]``)."""
    ids_per_seg: list[list[int]] = []

    def repl(m: re.Match) -> str:
        try:
            ids = [int(s) for s in re.split(r"[,\s]+", m.group(2).strip()) if s]
        except ValueError as e:
            raise DataFormatError(f"{where}: object ids '({m.group(2)})' are not integers") from e
        if not ids:
            raise DataFormatError(f"{where}: phrase '[{m.group(1)}]' has no object id")
        ids_per_seg.append(ids)
        return f"<p> {m.group(1).strip()} </p> [SEG]"

    text = BRACKET_PHRASE.sub(repl, caption)
    return re.sub(r"\s+", " ", text).strip(), ids_per_seg


class MevisMasks:
    """Masks of MeViS objects, by ``obj_id``, from a MeViS split folder."""

    def __init__(self, split_dir: str | os.PathLike):
        self.root = Path(split_dir)
        self.meta = load_json(self.root / "meta_expressions.json")
        self.mask_dict = load_json(self.root / "mask_dict.json")
        self.annos = mevis_object_annos(self.meta)

    def _anno(self, video: str, obj: int) -> str:
        try:
            return self.annos[video][obj]
        except KeyError:
            raise DataFormatError(f"{self.root}: video {video} has no object {obj} in meta_expressions.json") from None

    def frame_paths(self, video: str) -> list[Path]:
        if video not in self.meta["videos"]:
            raise DataFormatError(f"{self.root}: video {video} is not in meta_expressions.json")
        return [find_frame(self.root / "JPEGImages" / video, f) for f in self.meta["videos"][video]["frames"]]

    def presence(self, video: str, obj: int, n: int) -> np.ndarray:
        return np.array([rle_area(r) > 0 for r in self.mask_dict[self._anno(video, obj)]][:n], dtype=bool)

    def mask(self, video: str, obj: int, t: int, hw: tuple[int, int]) -> np.ndarray:
        rle = self.mask_dict[self._anno(video, obj)][t]
        return np.zeros(hw, bool) if rle is None else decode_rle(rle)


class PaletteMasks:
    """YouTube-VOS / DAVIS palette PNGs: pixel value = object id."""

    def __init__(self, split_dir: str | os.PathLike):
        self.root = Path(split_dir)
        self._frames: dict[str, list[Path]] = {}

    def frame_paths(self, video: str) -> list[Path]:
        if video not in self._frames:
            self._frames[video] = list_frame_files(self.root / "JPEGImages" / video)
        return self._frames[video]

    def _label(self, video: str, t: int) -> np.ndarray:
        stem = self.frame_paths(video)[t].stem
        return read_index_png(find_frame(self.root / "Annotations" / video, stem))

    def presence(self, video: str, obj: int, n: int) -> np.ndarray:
        return np.array([(self._label(video, t) == obj).any() for t in range(n)], dtype=bool)

    def mask(self, video: str, obj: int, t: int, hw: tuple[int, int]) -> np.ndarray:
        return self._label(video, t) == obj


class PngDirMasks:
    """VidSTG / HC-STVG: ``<video>/frames/*`` and ``<video>/masks/<obj:03d>/<frame stem>.png`` (0/255)."""

    def __init__(self, split_dir: str | os.PathLike):
        self.root = Path(split_dir)
        self._frames: dict[str, list[Path]] = {}

    def frame_paths(self, video: str) -> list[Path]:
        if video not in self._frames:
            self._frames[video] = list_frame_files(self.root / video / "frames")
        return self._frames[video]

    def _mask_path(self, video: str, obj: int, t: int) -> Path:
        return self.root / video / "masks" / f"{obj:03d}" / f"{self.frame_paths(video)[t].stem}.png"

    def presence(self, video: str, obj: int, n: int) -> np.ndarray:
        if not (self.root / video / "masks" / f"{obj:03d}").is_dir():
            raise DataFormatError(f"{self.root / video / 'masks'}: no folder for object {obj:03d}")
        return np.array([self._mask_path(video, obj, t).exists() for t in range(n)], dtype=bool)

    def mask(self, video: str, obj: int, t: int, hw: tuple[int, int]) -> np.ndarray:
        p = self._mask_path(video, obj, t)
        return read_index_png(p) > 0 if p.exists() else np.zeros(hw, bool)


def load_captions(source: str | os.PathLike) -> list[tuple[str, str]]:
    """``[(video, caption)]`` from a folder of ``<video>.json`` files or one JSON file (see module doc)."""
    source = Path(source)
    out: list[tuple[str, str]] = []
    if source.is_dir():
        for p in sorted(source.glob("*.json")):
            doc = load_json(p)
            if not isinstance(doc, dict) or "caption" not in doc:
                raise DataFormatError(f"{p}: expected an object with a 'caption'")
            out.append((str(doc.get("video", doc.get("video_id", p.stem))), str(doc["caption"])))
        return out
    doc = load_json(source)
    items = doc.items() if isinstance(doc, dict) else (
        (d.get("video", d.get("video_id")), d) for d in doc if isinstance(d, dict))
    for k, (vid, c) in enumerate(items):
        cap = c.get("caption") if isinstance(c, dict) else c
        if vid is None or not isinstance(cap, str):
            raise DataFormatError(f"{source}: entry {k} needs a video name and a string caption")
        out.append((str(vid), cap))
    return out


@dataclass
class BracketRecord:
    video: str
    caption: str


class BracketGCGDataset(GroundedDataset):
    """GCG samples from ``[phrase](ids)`` captions and a mask source."""

    name = "bracket_gcg"

    def __init__(self, captions: str | os.PathLike, masks, sampling: FrameSampling | None = None, *,
                 name: str | None = None, random_templates: bool = False):
        super().__init__(sampling or FrameSampling(num_frames=5), name=name, random_templates=random_templates)
        self.masks = masks
        self.captions_path = Path(captions)
        for vid, cap in load_captions(captions):
            render_bracket_caption(cap, f"{captions}: video {vid}")  # reject bad captions up front
            self._records.append(BracketRecord(vid, cap))

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        r: BracketRecord = self._records[i]
        answer, seg_ids = render_bracket_caption(r.caption, f"{self.captions_path}: video {r.video}")
        paths = self.masks.frame_paths(r.video)
        n = len(paths)
        presence = np.stack([np.any([self.masks.presence(r.video, o, n) for o in ids], axis=0) for ids in seg_ids]) \
            if seg_ids else None
        idx = select_frames(n, self.sampling, presence, rng if self.sampling.random else None)
        frames = read_frames([paths[t] for t in idx])
        hw = frames.shape[1:3]
        masks = np.zeros((len(seg_ids), len(idx)) + hw, dtype=bool)
        for s, ids in enumerate(seg_ids):
            for o in ids:
                for k, t in enumerate(idx):
                    m = self.masks.mask(r.video, o, int(t), hw)
                    if m.shape != hw:
                        raise DataFormatError(f"{self.name}: video {r.video} object {o} frame {t}: mask {m.shape} "
                                              f"but frames are {hw}")
                    masks[s, k] |= m
        conversation = [{"role": "user", "content": pick(GCG_QUESTIONS, self.template_rng(rng))},
                        {"role": "assistant", "content": answer}]
        return GroundedSample(frames, conversation, masks, idx, f"{self.name}:{r.video}",
                              {"video": r.video, "object_ids": seg_ids})
