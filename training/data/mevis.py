"""MeViS referring video segmentation (henghuiding/MeViS layout): writer and loader.

Layout of a split folder (``mevis/train``, ``mevis/valid_u``)::

    JPEGImages/<video>/<frame>.jpg
    meta_expressions.json   {"videos": {<video>: {"vid_id", "frames": [<frame>, ...],
                                                  "expressions": {<exp_id>: {"exp", "obj_id": [..], "anno_id": [..]}}}}}
    mask_dict.json          {"<anno_id>": [COCO RLE or null, one per frame]}

The target of an expression is the union of the masks of its ``anno_id``s (as MeViS evaluates it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from vglamm.errors import DataFormatError
from vglamm.io.atomic import atomic_path, write_text_atomic
from vglamm.sample import GroundedSample

from ._rle import decode_rle, rle_area
from .base import FrameSampling, GroundedDataset, load_json, read_frames, select_frames
from .templates import REFER_ANSWERS, REFER_VIDEO_QUESTIONS, pick
from .video_gcg import masks_to_segmentations

FRAME_EXTS = (".jpg", ".jpeg", ".png")


@dataclass
class MevisExpression:
    exp: str
    obj_ids: list[int]


@dataclass
class MevisClip:
    """One video to write: object masks, expressions over them, and optionally the frames themselves.

    masks:       ``{obj_id: (T, H, W) bool}``.
    frames:      (T, H, W, 3) uint8, written to ``JPEGImages/<video>/``; leave None when they are already there.
    frame_names: frame file stems (default ``00000``, ``00001``, ...).
    """

    video: str
    masks: dict[int, np.ndarray]
    expressions: list[MevisExpression]
    frames: np.ndarray | None = None
    frame_names: list[str] | None = None
    extra: dict = field(default_factory=dict)


def write_mevis(root: str | os.PathLike, clips: Sequence[MevisClip], *, image_ext: str = ".jpg",
                overwrite: bool = False) -> Path:
    """Write clips as a MeViS split folder (``meta_expressions.json``, ``mask_dict.json``, ``JPEGImages``).

    Annotation ids are assigned per (video, object), unique over the split. Refuses to replace an existing
    split unless ``overwrite``. Returns ``root``.
    """
    from PIL import Image

    root = Path(root)
    if (root / "meta_expressions.json").exists() and not overwrite:
        raise DataFormatError(f"{root} already holds a MeViS split; pass overwrite=True or choose another folder")
    meta: dict = {"videos": {}}
    mask_dict: dict[str, list] = {}
    next_anno = 0
    for vid_id, clip in enumerate(clips):
        shapes = {np.asarray(m).shape for m in clip.masks.values()}
        if len(shapes) != 1:
            raise DataFormatError(f"MeViS clip {clip.video}: object masks differ in shape {sorted(shapes)}")
        t, h, w = next(iter(shapes))
        names = clip.frame_names or [f"{k:05d}" for k in range(t)]
        if len(names) != t:
            raise DataFormatError(f"MeViS clip {clip.video}: {len(names)} frame names for {t} mask frames")
        anno_of = {}
        for obj in sorted(clip.masks):
            anno_of[obj] = next_anno
            mask_dict[str(next_anno)] = masks_to_segmentations(clip.masks[obj])
            next_anno += 1
        exps = {}
        for k, e in enumerate(clip.expressions):
            unknown = [o for o in e.obj_ids if o not in anno_of]
            if unknown or not e.obj_ids:
                raise DataFormatError(f"MeViS clip {clip.video}: expression '{e.exp}' refers to objects {unknown or '[]'}"
                                      f" but the clip has masks for {sorted(anno_of)}")
            exps[str(k)] = {"exp": e.exp, "obj_id": [int(o) for o in e.obj_ids],
                            "anno_id": [anno_of[o] for o in e.obj_ids]}
        meta["videos"][clip.video] = {"vid_id": vid_id, "frames": list(names), "expressions": exps, **clip.extra}
        if clip.frames is not None:
            frames = np.asarray(clip.frames)
            if frames.shape != (t, h, w, 3) or frames.dtype != np.uint8:
                raise DataFormatError(f"MeViS clip {clip.video}: frames must be ({t}, {h}, {w}, 3) uint8, "
                                      f"got {frames.shape} {frames.dtype}")
            folder = root / "JPEGImages" / clip.video
            folder.mkdir(parents=True, exist_ok=True)
            for name, f in zip(names, frames):
                with atomic_path(folder / f"{name}{image_ext}") as tmp:
                    Image.fromarray(f).save(tmp, quality=95) if image_ext in (".jpg", ".jpeg") else \
                        Image.fromarray(f).save(tmp)
    # mask_dict first: a split whose meta file exists is complete
    write_text_atomic(root / "mask_dict.json", json.dumps(mask_dict))
    write_text_atomic(root / "meta_expressions.json", json.dumps(meta))
    return root


def find_frame(folder: Path, stem: str) -> Path:
    """``folder/stem`` with the first image extension that exists (MeViS ships .jpg; generators may write .png)."""
    for ext in FRAME_EXTS:
        p = folder / f"{stem}{ext}"
        if p.exists():
            return p
    if (folder / stem).exists():
        return folder / stem
    raise DataFormatError(f"frame {stem} not found in {folder} (tried {', '.join(FRAME_EXTS)})")


def resolve_split(root: str | os.PathLike, split: str | None, marker: str) -> Path:
    """The split folder: ``root`` itself when it holds ``marker``, else ``root/split``."""
    root = Path(root)
    if (root / marker).exists():
        return root
    if split and (root / split / marker).exists():
        return root / split
    raise DataFormatError(f"no {marker} in {root}" + (f" or {root / split}" if split else "")
                          + ": point root at the dataset's split folder")


@dataclass
class MevisRecord:
    video: str
    exp_id: str
    exp: str
    anno_ids: list[str]
    frames: list[str]


class MevisDataset(GroundedDataset):
    """MeViS referring samples: "What is {exp} in this video? ..." -> "It is [SEG]." with the union mask."""

    name = "mevis"

    def __init__(self, root: str | os.PathLike, split: str | None = "train", sampling: FrameSampling | None = None,
                 *, name: str | None = None, random_templates: bool = False):
        super().__init__(sampling, name=name, random_templates=random_templates)
        self.root = resolve_split(root, split, "meta_expressions.json")
        meta_path = self.root / "meta_expressions.json"
        meta = load_json(meta_path)
        self.mask_dict = load_json(self.root / "mask_dict.json")
        try:
            videos = meta["videos"]
            for vid, v in videos.items():
                for exp_id, e in v["expressions"].items():
                    annos = [str(a) for a in e["anno_id"]]
                    for a in annos:
                        if a not in self.mask_dict:
                            raise DataFormatError(f"{meta_path}: video {vid} expression {exp_id} uses anno_id {a}, "
                                                  f"absent from mask_dict.json")
                        if len(self.mask_dict[a]) != len(v["frames"]):
                            raise DataFormatError(f"{self.root / 'mask_dict.json'}: anno_id {a} has "
                                                  f"{len(self.mask_dict[a])} frames, video {vid} has {len(v['frames'])}")
                    self._records.append(MevisRecord(vid, str(exp_id), str(e["exp"]), annos, list(v["frames"])))
        except (KeyError, TypeError, AttributeError) as err:
            raise DataFormatError(f"{meta_path}: malformed MeViS meta (missing or bad field {err})") from err

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        r: MevisRecord = self._records[i]
        n = len(r.frames)
        presence = np.array([[any(rle_area(self.mask_dict[a][t]) > 0 for a in r.anno_ids) for t in range(n)]])
        idx = select_frames(n, self.sampling, presence, rng if self.sampling.random else None)
        frames = read_frames([find_frame(self.root / "JPEGImages" / r.video, r.frames[t]) for t in idx])
        h, w = frames.shape[1:3]
        mask = np.zeros((1, len(idx), h, w), dtype=bool)
        for a in r.anno_ids:
            for k, t in enumerate(idx):
                rle = self.mask_dict[a][t]
                if rle is not None:
                    m = decode_rle(rle)
                    if m.shape != (h, w):
                        raise DataFormatError(f"{self.root}: anno_id {a} frame {t} is {m.shape}, frames are {(h, w)}")
                    mask[0, k] |= m
        trng = self.template_rng(rng)
        conversation = [{"role": "user", "content": pick(REFER_VIDEO_QUESTIONS, trng).format(exp=r.exp.strip())},
                        {"role": "assistant", "content": pick(REFER_ANSWERS, trng)}]
        return GroundedSample(frames, conversation, mask, idx, f"{self.name}:{r.video}/{r.exp_id}",
                              {"video": r.video, "exp_id": r.exp_id, "expression": r.exp})


def mevis_object_annos(meta: dict) -> dict[str, dict[int, str]]:
    """``{video: {obj_id: anno_id}}`` from MeViS expressions (obj_id[k] pairs with anno_id[k])."""
    out: dict[str, dict[int, str]] = {}
    for vid, v in meta["videos"].items():
        objs = out.setdefault(vid, {})
        for e in v["expressions"].values():
            for o, a in zip(e.get("obj_id", []), e.get("anno_id", [])):
                objs[int(o)] = str(a)
    return out
