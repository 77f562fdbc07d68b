"""Video grounded conversation generation (GCG) in the reference's YTVIS-style JSON: records, writer, reader, loader.

File layout (one JSON per split, e.g. ``video_gcg/instruction_data/train.json``)::

    {"videos": [{"id", "file_names": [frame paths relative to the frames root], "height", "width", "length",
                 "dataset_split": "yt19" | "burst" | ...,
                 "dense_cap": {"caption": "a man throws a ball", "token_pos": [1, 4], "mask_id": [11, 12],
                               "v_id2o_id": {"11": 1, "12": 2}}}],
     "annotations": [{"id": 11, "video_id", "height", "width", "category_id",
                      "segmentations": [COCO RLE or null, one per frame]}]}

``token_pos[k]`` is the index of a word of ``caption.split()`` tagged with annotation ``mask_id[k]``. A tagged word
becomes ``<p> word </p> [SEG]``; consecutive words tagged with the same annotations form one phrase
(``<p> a red ball </p> [SEG]``), and a word tagged with several annotations gets the union of their masks.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from vglamm.errors import DataFormatError
from vglamm.io.atomic import write_text_atomic
from vglamm.sample import GroundedSample

from ._rle import decode_rle, masks_to_rles, rle_area
from .base import FrameSampling, GroundedDataset, load_json, read_frames, select_frames
from .templates import GCG_QUESTIONS, pick

_TRAILING_PUNCT = re.compile(r"^(.*?)([.,;:!?\"')\]]+)$")
#: ``[phrase](id)`` / ``[phrase](id, id)`` — the caption style of mevis_gcg, vidstg_gcg, ytvos_gcg, hcstvg_gcg
BRACKET_PHRASE = re.compile(r"\[([^\[\]]+)\]\(\s*([^()]*?)\s*\)")


@dataclass
class GCGDenseCaption:
    caption: str
    token_pos: list[int]
    mask_id: list[int]
    v_id2o_id: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"caption": self.caption, "token_pos": [int(p) for p in self.token_pos],
                "mask_id": [int(m) for m in self.mask_id],
                "v_id2o_id": {str(k): int(v) for k, v in self.v_id2o_id.items()}}


@dataclass
class GCGVideo:
    """One clip: its frame files (relative to the frames root) and its grounded caption."""

    id: int
    file_names: list[str]
    height: int
    width: int
    dense_cap: GCGDenseCaption
    dataset_split: str = ""

    @property
    def length(self) -> int:
        return len(self.file_names)

    def to_json(self) -> dict:
        return {"id": int(self.id), "file_names": [str(f) for f in self.file_names], "height": int(self.height),
                "width": int(self.width), "length": self.length, "dataset_split": self.dataset_split,
                "dense_cap": self.dense_cap.to_json()}


@dataclass
class GCGAnnotation:
    """One object track: a COCO RLE (or None where absent) per frame of its video."""

    id: int
    video_id: int
    segmentations: list[dict | None]
    height: int
    width: int
    category_id: int = 1

    def to_json(self) -> dict:
        return {"id": int(self.id), "video_id": int(self.video_id), "height": int(self.height),
                "width": int(self.width), "category_id": int(self.category_id),
                "segmentations": list(self.segmentations)}

    def mask(self, t: int) -> np.ndarray:
        """(H, W) bool mask in frame ``t`` (all False where the object is absent)."""
        rle = self.segmentations[t]
        if rle is None:
            return np.zeros((self.height, self.width), dtype=bool)
        m = decode_rle(rle)
        if m.shape != (self.height, self.width):
            raise DataFormatError(f"annotation {self.id}: frame {t} mask is {m.shape[1]}x{m.shape[0]}, "
                                  f"expected {self.width}x{self.height}")
        return m


# ---------------------------------------------------------------------------------------------------------------
# building records from masks


def masks_to_segmentations(masks: np.ndarray) -> list[dict | None]:
    """(T, H, W) bool -> per-frame COCO RLE, None where the mask is empty (the YTVIS convention)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise DataFormatError(f"object masks must be (T, H, W), got shape {masks.shape}")
    return masks_to_rles(masks)


def gcg_clip(video_id: int, file_names: Sequence[str], caption: str, masks: Mapping[int, np.ndarray], *,
             first_annotation_id: int | None = None, dataset_split: str = "") -> tuple[GCGVideo, list[GCGAnnotation]]:
    """Build one clip's records from a ``[phrase](obj_id, ...)`` caption and ``{obj_id: (T, H, W) bool}`` masks.

    >>> video, anns = gcg_clip(1, ["v/0.jpg", "v/1.jpg"], "[A dog](1) chases [a red ball](2).", {1: m1, 2: m2})

    Annotation ids are ``first_annotation_id + k`` (default ``video_id * 1000``); pass a running counter when
    writing many clips so ids stay unique across the file.
    """
    if not masks:
        raise DataFormatError(f"video {video_id}: no object masks given")
    shapes = {np.asarray(m).shape for m in masks.values()}
    if len(shapes) != 1:
        raise DataFormatError(f"video {video_id}: object masks differ in shape {sorted(shapes)}")
    t, h, w = next(iter(shapes))
    if t != len(file_names):
        raise DataFormatError(f"video {video_id}: masks have {t} frames but {len(file_names)} file names")
    base = video_id * 1000 if first_annotation_id is None else first_annotation_id
    obj_ids = sorted(masks)
    ann_of = {o: base + k for k, o in enumerate(obj_ids)}
    anns = [GCGAnnotation(ann_of[o], video_id, masks_to_segmentations(masks[o]), h, w) for o in obj_ids]

    # words and word-level tags; text glued after ")" (punctuation) stays on the phrase's last word
    words: list[str] = []
    token_pos: list[int] = []
    mask_id: list[int] = []
    pos = 0
    for m in BRACKET_PHRASE.finditer(caption):
        words += caption[pos:m.start()].split()
        ids = _parse_ids(m.group(2), f"video {video_id}")
        for o in ids:
            if o not in ann_of:
                raise DataFormatError(f"video {video_id}: caption refers to object {o} but masks has {obj_ids}")
        phrase_words = m.group(1).split()
        for w_ in phrase_words:
            for o in ids:
                token_pos.append(len(words))
                mask_id.append(ann_of[o])
            words.append(w_)
        pos = m.end()
        tail = re.match(r"\S+", caption[pos:])
        if tail and phrase_words:
            words[-1] += tail.group(0)
            pos += tail.end()
    words += caption[pos:].split()
    dense = GCGDenseCaption(" ".join(words), token_pos, mask_id, {str(a): o for o, a in ann_of.items()})
    return GCGVideo(video_id, list(map(str, file_names)), h, w, dense, dataset_split), anns


def _parse_ids(text: str, where: str) -> list[int]:
    try:
        return [int(s) for s in re.split(r"[,\s]+", text.strip()) if s]
    except ValueError as e:
        raise DataFormatError(f"{where}: object ids '({text})' are not integers") from e


# ---------------------------------------------------------------------------------------------------------------
# writing and reading


def validate_gcg(videos: Sequence[GCGVideo], annotations: Sequence[GCGAnnotation], where: str = "video_gcg") -> None:
    """Raise DataFormatError naming the first inconsistent record (ids, frame counts, token positions)."""
    anns = {}
    for a in annotations:
        if a.id in anns:
            raise DataFormatError(f"{where}: duplicate annotation id {a.id}")
        anns[a.id] = a
    seen = set()
    for v in videos:
        if v.id in seen:
            raise DataFormatError(f"{where}: duplicate video id {v.id}")
        seen.add(v.id)
        dc = v.dense_cap
        n_words = len(dc.caption.split())
        if len(dc.token_pos) != len(dc.mask_id):
            raise DataFormatError(f"{where}: video {v.id}: token_pos has {len(dc.token_pos)} entries but mask_id "
                                  f"{len(dc.mask_id)}")
        for p, a in zip(dc.token_pos, dc.mask_id):
            if not 0 <= p < n_words:
                raise DataFormatError(f"{where}: video {v.id}: token_pos {p} outside the caption's {n_words} words")
            if a not in anns:
                raise DataFormatError(f"{where}: video {v.id}: mask_id {a} has no annotation")
            if anns[a].video_id != v.id:
                raise DataFormatError(f"{where}: video {v.id}: annotation {a} belongs to video {anns[a].video_id}")
            if len(anns[a].segmentations) != v.length:
                raise DataFormatError(f"{where}: annotation {a} has {len(anns[a].segmentations)} frames, video "
                                      f"{v.id} has {v.length}")


def write_video_gcg(path: str | os.PathLike, videos: Sequence[GCGVideo], annotations: Sequence[GCGAnnotation], *,
                    info: dict | None = None) -> Path:
    """Write a video GCG JSON (atomically) after checking the records are consistent; returns the path."""
    path = Path(path)
    validate_gcg(videos, annotations, str(path))
    doc = {"info": info or {"description": "video GCG, written by vglamm"},
           "videos": [v.to_json() for v in videos], "annotations": [a.to_json() for a in annotations]}
    write_text_atomic(path, json.dumps(doc))
    return path


def read_video_gcg(path: str | os.PathLike) -> tuple[list[GCGVideo], list[GCGAnnotation]]:
    """Parse and validate a video GCG JSON; DataFormatError names the file and the record."""
    doc = load_json(path)
    if not isinstance(doc, dict) or "videos" not in doc or "annotations" not in doc:
        raise DataFormatError(f"{path}: expected an object with 'videos' and 'annotations'")
    videos, anns = [], []
    for k, v in enumerate(doc["videos"]):
        try:
            dc = v["dense_cap"]
            videos.append(GCGVideo(int(v["id"]), list(v["file_names"]), int(v["height"]), int(v["width"]),
                                   GCGDenseCaption(str(dc["caption"]), [int(p) for p in dc["token_pos"]],
                                                   [int(m) for m in dc["mask_id"]],
                                                   dict(dc.get("v_id2o_id") or {})),
                                   str(v.get("dataset_split", ""))))
        except (KeyError, TypeError, ValueError) as e:
            raise DataFormatError(f"{path}: videos[{k}] (id {v.get('id') if isinstance(v, dict) else '?'}) is "
                                  f"malformed: missing or bad field {e}") from e
    by_video = {v.id: v for v in videos}
    for k, a in enumerate(doc["annotations"]):
        try:
            vid = int(a["video_id"])
            h = int(a.get("height") or by_video[vid].height)
            w = int(a.get("width") or by_video[vid].width)
            anns.append(GCGAnnotation(int(a["id"]), vid, list(a["segmentations"]), h, w,
                                      int(a.get("category_id", 1))))
        except (KeyError, TypeError, ValueError) as e:
            raise DataFormatError(f"{path}: annotations[{k}] is malformed: missing or bad field {e}") from e
    validate_gcg(videos, anns, str(path))
    return videos, anns


# ---------------------------------------------------------------------------------------------------------------
# caption rendering


def render_tagged_words(words: Sequence[str], tags: Mapping[int, Sequence[int]], *, merge_adjacent: bool = True
                        ) -> tuple[str, list[list[int]]]:
    """Words + ``{word_index: [object ids]}`` -> (answer with ``<p> phrase </p> [SEG]``, object ids per [SEG]).

    Trailing punctuation of a phrase's last word is moved after its ``[SEG]`` ("<p> ball </p> [SEG].").
    """
    out: list[str] = []
    segs: list[list[int]] = []
    i = 0
    while i < len(words):
        if i not in tags:
            out.append(words[i])
            i += 1
            continue
        ids = sorted(set(tags[i]))
        j = i + 1
        if merge_adjacent:
            while j < len(words) and j in tags and sorted(set(tags[j])) == ids \
                    and not _TRAILING_PUNCT.match(words[j - 1]):
                j += 1
        span = list(words[i:j])
        tail = ""
        m = _TRAILING_PUNCT.match(span[-1])
        if m and m.group(1):
            span[-1], tail = m.group(1), m.group(2)
        out.append(f"<p> {' '.join(span)} </p> [SEG]{tail}")
        segs.append(ids)
        i = j
    return " ".join(out), segs


def render_gcg_caption(dense_cap: GCGDenseCaption, *, merge_adjacent: bool = True) -> tuple[str, list[list[int]]]:
    """A dense caption -> (answer text, annotation ids per ``[SEG]``)."""
    tags: dict[int, list[int]] = {}
    for p, a in zip(dense_cap.token_pos, dense_cap.mask_id):
        tags.setdefault(int(p), []).append(int(a))
    return render_tagged_words(dense_cap.caption.split(), tags, merge_adjacent=merge_adjacent)


# ---------------------------------------------------------------------------------------------------------------
# the loader


class VideoGCGDataset(GroundedDataset):
    """Video GCG samples: a GCG question, the grounded caption as answer, one union mask per phrase.

    frames_root: folder the ``file_names`` are relative to (default: the JSON's folder), or
                 ``{dataset_split: folder}`` as in the reference (``yt19`` -> YTVIS JPEGImages, ``burst`` -> BURST).
    The reference samples 5 frames covering every object, hence the default sampling.
    """

    name = "video_gcg"

    def __init__(self, json_path: str | os.PathLike, frames_root: str | os.PathLike | Mapping[str, str] | None = None,
                 sampling: FrameSampling | None = None, *, merge_adjacent: bool = True, name: str | None = None,
                 random_templates: bool = False):
        super().__init__(sampling or FrameSampling(num_frames=5), name=name, random_templates=random_templates)
        self.json_path = Path(json_path)
        self.frames_root = frames_root if frames_root is not None else self.json_path.parent
        self.merge_adjacent = merge_adjacent
        videos, anns = read_video_gcg(self.json_path)
        self._anns = {a.id: a for a in anns}
        self._records = videos

    def _root_for(self, video: GCGVideo) -> Path:
        if isinstance(self.frames_root, Mapping):
            if video.dataset_split not in self.frames_root:
                raise DataFormatError(f"{self.json_path}: video {video.id} has dataset_split "
                                      f"'{video.dataset_split}' with no entry in frames_root")
            return Path(self.frames_root[video.dataset_split])
        return Path(self.frames_root)

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        video: GCGVideo = self._records[i]
        answer, seg_ids = render_gcg_caption(video.dense_cap, merge_adjacent=self.merge_adjacent)
        presence = np.array([[any(rle_area(self._anns[a].segmentations[t]) > 0 for a in ids)
                              for t in range(video.length)] for ids in seg_ids], dtype=bool)
        idx = select_frames(video.length, self.sampling, presence.reshape(len(seg_ids), video.length),
                            rng if self.sampling.random else None)
        root = self._root_for(video)
        frames = read_frames([root / video.file_names[t] for t in idx])
        if frames.shape[1:3] != (video.height, video.width):
            raise DataFormatError(f"{self.json_path}: video {video.id}: frames are {frames.shape[2]}x"
                                  f"{frames.shape[1]} but the record says {video.width}x{video.height}")
        masks = np.zeros((len(seg_ids), len(idx), video.height, video.width), dtype=bool)
        for n, ids in enumerate(seg_ids):
            for a in ids:
                for k, t in enumerate(idx):
                    masks[n, k] |= self._anns[a].mask(int(t))
        conversation = [{"role": "user", "content": pick(GCG_QUESTIONS, self.template_rng(rng))},
                        {"role": "assistant", "content": answer}]
        return GroundedSample(frames, conversation, masks, idx, f"{self.name}:{video.id}",
                              {"video_id": video.id, "annotation_ids": seg_ids})
