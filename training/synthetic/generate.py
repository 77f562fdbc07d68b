"""Synthetic clips in memory (:func:`make_clip`, :func:`clip_samples`) and on disk (:func:`generate_dataset`).

On-disk layout of one split (both formats share the JPEG frames; ids agree across files)::

    out_dir/{split}/JPEGImages/{video}/00000.jpg ...   frames, as the public datasets ship them
    out_dir/{split}/video_gcg.json                     YTVIS-style GCG JSON (training.data.video_gcg)
    out_dir/{split}/meta_expressions.json              MeViS: expressions (+ "kind": attribute | motion)
    out_dir/{split}/mask_dict.json                     MeViS: {anno_id: [COCO RLE | null per frame]}
    out_dir/{split}/scenes.json                        the scene descriptions (attributes, motion, seed)
    out_dir/{split}/videos/{video}.mp4                 optional H.264 copies (``write_mp4=True``)

Splits draw clip seeds from disjoint ranges (``SPLIT_OFFSETS``), so train and valid never share a clip.
The split folder is assembled beside the target and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vglamm.errors import ConfigError
from vglamm.io.atomic import write_text_atomic
from vglamm.sample import GroundedSample

from training.data.templates import GCG_QUESTIONS, REFER_ANSWERS, REFER_VIDEO_QUESTIONS

from .language import Expression, GroundedCaption, grounded_caption, referring_expressions
from .render import render_scene, silhouette
from .world import Scene, WorldConfig, sample_scene

SPLIT_OFFSETS = {"train": 0, "valid": 1_000_000, "test": 2_000_000}
_MAX_PER_SPLIT = 1_000_000


@dataclass
class Clip:
    """One generated clip: the scene, its pixels, visible masks (object order), caption and expressions."""

    clip_id: str
    seed: int
    scene: Scene
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    masks: np.ndarray  # (N, T, H, W) bool, N in scene.objects order (obj_id = index + 1)
    caption: GroundedCaption
    expressions: list[Expression]

    def object_masks(self, obj_id: int) -> np.ndarray:
        return self.masks[obj_id - 1]


def clip_seed(seed: int, split: str, index: int) -> int:
    """The seed of clip ``index`` of ``split``: split ranges are disjoint, so no clip is in two splits."""
    if split not in SPLIT_OFFSETS:
        raise ConfigError(f"split={split!r}: use one of {sorted(SPLIT_OFFSETS)}.")
    if not 0 <= index < _MAX_PER_SPLIT:
        raise ConfigError(f"clip index {index}: use 0..{_MAX_PER_SPLIT - 1}.")
    return int(np.random.SeedSequence([int(seed), SPLIT_OFFSETS[split] + index]).generate_state(1)[0])


def _visible_enough(scene: Scene, masks: np.ndarray, cfg: WorldConfig) -> bool:
    visible = masks.sum(axis=(2, 3))  # (N, T)
    for n, obj in enumerate(scene.objects):
        full = max(int(silhouette(obj, 0, scene.height, scene.width).sum()), 1)
        if np.mean(visible[n] >= cfg.min_visible_fraction * full) < cfg.min_visible_frames:
            return False
    return True


def make_clip(seed: int, config: WorldConfig | None = None, *, clip_id: str | None = None,
              per_object_expressions: int = 2) -> Clip:
    """Sample, render and describe one clip; same seed and config -> byte-identical frames and masks.

    Scenes where an object stays mostly hidden are redrawn (from the same generator, so still deterministic).
    """
    cfg = config or WorldConfig()
    cfg.validate()
    rng = np.random.default_rng(seed)
    for _ in range(cfg.max_tries):
        scene = sample_scene(rng, cfg)
        frames, masks = render_scene(scene)
        if _visible_enough(scene, masks, cfg):
            break
    # After max_tries the last scene is kept: rare, and its masks are still exact.
    caption = grounded_caption(scene, rng)
    expressions = referring_expressions(scene, rng, per_object=per_object_expressions)
    return Clip(clip_id or f"syn_{seed:010d}", int(seed), scene, frames, masks, caption, expressions)


def clip_samples(clip: Clip, rng: np.random.Generator | None = None) -> list[GroundedSample]:
    """The clip as training samples: one GCG conversation and one referring conversation per expression."""
    def pick(options):
        return options[0] if rng is None else options[int(rng.integers(len(options)))]

    idx = np.arange(clip.scene.num_frames)
    gcg_masks = np.stack([clip.object_masks(o) for o in clip.caption.obj_ids])
    out = [GroundedSample(clip.frames, [{"role": "user", "content": pick(GCG_QUESTIONS)},
                                        {"role": "assistant", "content": clip.caption.grounded()}],
                          gcg_masks, idx, f"synthetic_gcg:{clip.clip_id}",
                          {"obj_ids": list(clip.caption.obj_ids), "phrases": clip.caption.phrases})]
    for e in clip.expressions:
        out.append(GroundedSample(clip.frames, [{"role": "user", "content": pick(REFER_VIDEO_QUESTIONS).format(exp=e.text)},
                                                {"role": "assistant", "content": pick(REFER_ANSWERS)}],
                                  np.stack([clip.object_masks(o) for o in e.obj_ids]).any(0, keepdims=True), idx,
                                  f"synthetic_refer:{clip.clip_id}", {"expression": e.text, "kind": e.kind,
                                                                      "obj_ids": list(e.obj_ids)}))
    return out


def scene_record(clip: Clip) -> dict:
    """JSON-ready description of the clip's scene (for evaluation breakdowns and debugging)."""
    s = clip.scene
    return {"video": clip.clip_id, "seed": clip.seed, "width": s.width, "height": s.height,
            "num_frames": s.num_frames, "fps": s.fps,
            "background": {"kind": s.background.kind, "colours": [list(c) for c in s.background.colours]},
            "objects": [{**asdict(o), "direction": o.direction, "stops": o.stops} for o in s.objects],
            "caption": clip.caption.bracketed()}


@dataclass
class GenerationSummary:
    split_dir: Path
    split: str
    num_videos: int
    num_expressions: int
    expressions_by_kind: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def clips_per_second(self) -> float:
        return self.num_videos / self.seconds if self.seconds > 0 else float("inf")


def _write_jpegs(folder: Path, frames: np.ndarray, quality: int) -> list[str]:
    folder.mkdir(parents=True)
    names = []
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    for t, frame in enumerate(frames):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), params)
        if not ok:  # pragma: no cover - OpenCV failing to encode a valid uint8 image
            raise OSError(f"JPEG encoding failed for frame {t} of {folder.name}")
        name = f"{t:05d}.jpg"
        (folder / name).write_bytes(buf.tobytes())
        names.append(name)
    return names


class _MevisClips(Sequence):
    """The split's clips for ``write_mevis``, decoded one at a time from the GCG RLEs (bounded memory)."""

    def __init__(self, items: list[tuple[str, list[str], list, dict[int, int], list[Expression]]]):
        self.items = items  # (video name, frame stems, GCG annotations, {annotation id: obj_id}, expressions)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from training.data.mevis import MevisClip, MevisExpression

        name, stems, anns, obj_of, expressions = self.items[i]
        masks = {obj_of[a.id]: np.stack([a.mask(t) for t in range(len(stems))]) for a in anns}
        exps = [MevisExpression(e.text, list(e.obj_ids)) for e in expressions]
        # MeViS has no field for the expression kind; it rides along per video, keyed like "expressions".
        kinds = {str(k): e.kind for k, e in enumerate(expressions)}
        return MevisClip(name, masks, exps, frame_names=stems, extra={"expression_kinds": kinds})


def generate_dataset(out_dir: str | os.PathLike, num_videos: int, seed: int = 0, split: str = "train", *,
                     config: WorldConfig | None = None, per_object_expressions: int = 2, write_mp4: bool = False,
                     jpeg_quality: int = 92, overwrite: bool = False, start_index: int = 0) -> GenerationSummary:
    """Write ``num_videos`` clips of ``split`` under ``out_dir/split`` in the GCG and MeViS layouts.

    Clip ``i`` uses ``clip_seed(seed, split, start_index + i)``; its video name is ``{split}_{index:06d}``.
    An existing split folder is an error unless ``overwrite=True`` (it is then replaced, never merged).
    """
    # The loaders' own records and writers, so what is written is what the loaders read.
    from training.data.mevis import write_mevis
    from training.data.video_gcg import gcg_clip, write_video_gcg

    # 1. Check inputs
    if num_videos < 1:
        raise ConfigError(f"num_videos={num_videos}: generate at least one clip.")
    if start_index < 0 or start_index + num_videos > _MAX_PER_SPLIT:
        raise ConfigError(f"clips {start_index}..{start_index + num_videos - 1} exceed the split's seed range "
                          f"(0..{_MAX_PER_SPLIT - 1}).")
    cfg = config or WorldConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    final = out_dir / split
    if final.exists() and not overwrite:
        raise ConfigError(f"{final} exists; pass overwrite=True (CLI: --overwrite) or choose another out_dir.")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{split}.", dir=out_dir))
    t0 = time.perf_counter()
    try:
        # 2. Render clips, write frames, build the records
        gcg_videos, gcg_anns, mevis_items, scenes = [], [], [], []
        by_kind: dict[str, int] = {}
        next_anno = 1
        for i in range(num_videos):
            index = start_index + i
            name = f"{split}_{index:06d}"
            clip = make_clip(clip_seed(seed, split, index), cfg, clip_id=name,
                             per_object_expressions=per_object_expressions)
            files = _write_jpegs(work / "JPEGImages" / name, clip.frames, jpeg_quality)
            if write_mp4:
                from vglamm.io.video import write_video
                write_video(work / "videos" / f"{name}.mp4", clip.frames, clip.scene.fps, preset="veryfast")
            obj_masks = {o.obj_id: clip.object_masks(o.obj_id) for o in clip.scene.objects}
            video, anns = gcg_clip(index + 1, [f"JPEGImages/{name}/{f}" for f in files], clip.caption.bracketed(),
                                   obj_masks, first_annotation_id=next_anno, dataset_split=f"synthetic_{split}")
            next_anno += len(anns)
            gcg_videos.append(video)
            gcg_anns.extend(anns)
            obj_of = {int(a): o for a, o in video.dense_cap.v_id2o_id.items()}
            mevis_items.append((name, [Path(f).stem for f in files], anns, obj_of, clip.expressions))
            scenes.append(scene_record(clip))
            for e in clip.expressions:
                by_kind[e.kind] = by_kind.get(e.kind, 0) + 1

        # 3. Annotation files
        info = {"description": "vglamm synthetic grounded-video world", "split": split, "seed": seed,
                "config": asdict(cfg)}
        write_video_gcg(work / "video_gcg.json", gcg_videos, gcg_anns, info=info)
        write_mevis(work, _MevisClips(mevis_items))
        write_text_atomic(work / "scenes.json", json.dumps({"info": info, "scenes": scenes}))

        # 4. Move the finished split into place
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{split}.old.", dir=out_dir))
            os.replace(final, trash / split)
            shutil.rmtree(trash)
        os.replace(work, final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return GenerationSummary(final, split, num_videos, sum(by_kind.values()), by_kind, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.synthetic OUT --num-videos N --seed S --split train [--mp4] [--overwrite]``."""
    import argparse

    p = argparse.ArgumentParser(description="Generate the synthetic grounded-video dataset.")
    p.add_argument("out_dir")
    p.add_argument("--num-videos", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=sorted(SPLIT_OFFSETS))
    p.add_argument("--frames", type=int, default=WorldConfig.num_frames)
    p.add_argument("--height", type=int, default=WorldConfig.height)
    p.add_argument("--width", type=int, default=WorldConfig.width)
    p.add_argument("--mp4", action="store_true", help="also write an H.264 MP4 per clip")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    cfg = WorldConfig(num_frames=a.frames, height=a.height, width=a.width)
    s = generate_dataset(a.out_dir, a.num_videos, a.seed, a.split, config=cfg, write_mp4=a.mp4, overwrite=a.overwrite)
    print(f"wrote {s.num_videos} clips, {s.num_expressions} expressions {s.expressions_by_kind} to {s.split_dir} "
          f"in {s.seconds:.1f}s ({s.clips_per_second:.1f} clips/s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
