"""Benchmark runners: run a model over a public dataset layout, write its masks and per-video results, score them.

One runner per benchmark; :func:`run_benchmark` drives them the same way::

    OUT/run.json                 what was run (benchmark, data, model, mode): a rerun with other settings is refused
    OUT/per_video/<key>.json     one result per video (question for VidSTG), written atomically after its masks
    OUT/predictions/...          the masks in the benchmark's own format (see each runner)
    OUT/metrics.json             the merged metrics, with ``no_target`` = answers that held no [SEG]

A rerun skips every video whose per-video result exists (resume). Sharding: with ``RANK`` / ``WORLD_SIZE`` set
(torchrun) rank r takes videos i % WORLD_SIZE == r; under torchrun the ranks meet at a barrier and rank 0 merges;
without a process group a rank merges once every per-video result exists, and ``--merge-only`` merges later.

Layouts read:

- Ref-DAVIS17 (ReferFormer's ``ref-davis``): ``ROOT/meta_expressions/<split>/meta_expressions.json`` (4 expressions
  per object: expression i = object i // 4, annotator set i % 4), ``ROOT/<split>/JPEGImages/<video>/<frame>.jpg``,
  ``ROOT/<split>/Annotations/<video>/<frame>.png``. Masks: DAVIS palette PNGs ``predictions/anno_<a>/<video>/``
  (objects stacked over a background score of 0.1, argmax, as the reference); J/F/J&F per annotator set
  (unsupervised protocol), then averaged over the 4 sets.
- MeViS split folder (``JPEGImages/``, ``meta_expressions.json``, ``mask_dict.json`` when scored offline) or a
  Ref-YouTube-VOS root (``meta_expressions/<split>/meta_expressions.json``, ``<split>/JPEGImages``; server-scored).
  Masks: 0/255 PNGs ``predictions/<video>/<exp_id>/<frame>.png``, the first [SEG] only; ``--zip`` packs them.
- GCG: the VideoGLaMM YTVIS-style JSON with ``dense_cap`` (see ``training.data.video_gcg``), frames under
  ``--frames-root`` (default: the JSON's folder). Masks: RLE JSON ``predictions/<video_id>.json`` (layout of
  :mod:`vglamm.io.masks`, plus ``caption`` and ``raw_text``), small components (< 20 px) removed per frame.
- VidSTG (this library's minimal layout, frames already sampled as the reference does: 1 fps, <= 40 frames)::

      ROOT/frames/<video>/<frame>.jpg
      ROOT/questions/<question_id>.json
          {"video": "<video>", "qtype": "interrogative" | "declarative", "caption": "what is ... ?",
           "frames": ["00000", ...],                # optional: default every image of frames/<video>, sorted
           "boxes": {"<t>": [x_min, y_min, x_max, y_max], ...}}   # GT tube: t indexes "frames"

  Prompt: ``"{caption} Please respond with segmentation masks."`` (interrogative) or ``"Can you segment {caption}
  in this video?"`` (declarative); the first [SEG]'s masks become boxes. Masks: RLE JSON
  ``predictions/<question_id>.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from vglamm.errors import ConfigError, DataFormatError, MaskError, NoTargetFoundError
from vglamm.io.atomic import write_text_atomic

MIN_COMPONENT = 20  # remove_small_objects(min_size=20) of the reference's GCG / grounding evaluation
DAVIS_BACKGROUND = 0.1
DAVIS_ANNOTATORS = 4


# ------------------------------------------------------------------------------------------------------ helpers
def write_json(path: Path, obj: Any) -> Path:
    write_text_atomic(path, json.dumps(obj, indent=1, default=_json_default) + "\n")
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataFormatError(f"{path} not found.") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: invalid JSON ({e}).") from None


def shard_info() -> tuple[int, int]:
    """(rank, world size) from ``RANK`` / ``WORLD_SIZE`` (torchrun); (0, 1) when unset."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ConfigError("RANK and WORLD_SIZE must be integers.") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE.")
    return rank, world


def shard(keys: list[str], rank: int, world: int) -> list[str]:
    return [k for i, k in enumerate(keys) if i % world == rank]


def remove_small_components(masks: np.ndarray, min_size: int = MIN_COMPONENT) -> np.ndarray:
    """(T,H,W) bool with 4-connected components of fewer than ``min_size`` pixels removed, frame by frame
    (``skimage.morphology.remove_small_objects`` with its default connectivity)."""
    import cv2

    out = np.asarray(masks, bool).copy()
    for t in range(out.shape[0]):
        if not out[t].any():
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(out[t].astype(np.uint8), connectivity=4)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_size)
        small = small[small > 0]
        if small.size:
            out[t][np.isin(lab, small)] = False
    return out


def read_label_png(path: Path) -> np.ndarray:
    """A DAVIS mask PNG as integer labels: palette PNGs give their indices (255 = void); grayscale 0/255 PNGs
    (DAVIS 2016, binary predictions) give object 1 where > 0."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode, arr = img.mode, np.array(img)
    except (OSError, ValueError) as e:
        raise MaskError(f"cannot read mask {path}: {e}") from None
    if mode == "P":
        return arr.astype(np.int64)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return (arr > 0).astype(np.int64)


def _frames(folder: Path, names: list[str]) -> np.ndarray:
    from training.data.base import read_frames
    from training.data.mevis import find_frame

    return read_frames([find_frame(folder, n) for n in names])


def _write_rle_prediction(path: Path, masks: list[np.ndarray], phrases: list[str], size, frame_names,
                          **extra) -> None:
    """RLE JSON of :mod:`vglamm.io.masks` (an empty object list allowed) plus extra keys (caption, raw text)."""
    from vglamm.io.masks import masks_to_rles

    doc = {"video": extra.pop("video", None), "size": list(size), "num_frames": len(frame_names),
           "frame_names": list(frame_names), **extra,
           "objects": [{"id": k + 1, "phrase": p, "segmentations": masks_to_rles(m)}
                       for k, (m, p) in enumerate(zip(masks, phrases))]}
    write_json(path, doc)


def _read_rle_prediction(path: Path) -> dict | None:
    from vglamm.io.masks import load_rle_json

    if not path.exists():
        return None
    doc = load_rle_json(path)
    doc.update({k: v for k, v in read_json(path).items() if k in ("caption", "raw_text")})
    return doc


# ------------------------------------------------------------------------------------------------------ runner base
@dataclass
class RunOptions:
    """How a runner calls the model."""

    mode: str = "temporal"
    max_new_tokens: int = 512


class Runner:
    """A benchmark: its items (``keys``), inference on one item, and scoring (from per-video results or masks)."""

    name = "benchmark"
    has_ground_truth = True

    def keys(self) -> list[str]:
        raise NotImplementedError

    def infer(self, model, key: str, pred_root: Path, opts: RunOptions) -> dict:
        """Run the model on one item, write its masks under ``pred_root``, return its per-video result."""
        raise NotImplementedError

    def merge(self, results: dict[str, dict], pred_root: Path) -> dict:
        """Metrics from the per-video results (and, where needed, the masks they wrote); by default the written
        masks are scored as `--predictions` would score them, plus the count of answers without a target."""
        res = self.score_predictions(pred_root, [k for k in self.keys() if k in results])
        res["no_target"] = sum(r["no_target"] for r in results.values())
        return res

    def score_predictions(self, pred_root: Path, keys: list[str]) -> dict:
        """Metrics of masks made elsewhere, laid out as this runner writes them."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"benchmark": self.name}


# ------------------------------------------------------------------------------------------------------ Ref-DAVIS17
def davis_label_map(objects: list[np.ndarray | None], shape: tuple[int, int, int]) -> np.ndarray:
    """Objects (T,H,W) bool (None: not found) -> (T,H,W) uint8 labels: background score 0.1, argmax over
    [background, object 1, ...], so where objects overlap the lower id wins (the reference's rule)."""
    scores = np.full((len(objects) + 1, *shape), DAVIS_BACKGROUND, np.float32)
    for k, m in enumerate(objects):
        scores[k + 1] = 0.0 if m is None else np.asarray(m, np.float32)
    return scores.argmax(0).astype(np.uint8)


def davis_sequence_scores(gt_labels: np.ndarray, pred_labels: np.ndarray | None) -> dict:
    """Unsupervised-protocol scores of one sequence from label maps: {"objects": {id: {"J": [...], "F": [...]}},
    "assignment"}. ``pred_labels`` None scores every object 0."""
    from vglamm.evaluation.vos import evaluate_sequence, split_label_map

    gt, _ = split_label_map(gt_labels)  # void set to background, as the toolkit loads ground truth
    if pred_labels is None:
        pred = np.zeros((0, *gt.shape[1:]), bool)
    else:
        lab = np.where(pred_labels == 255, 0, pred_labels)
        pred, _ = split_label_map(lab, int(lab.max()))
    s = evaluate_sequence(gt, pred, protocol="unsupervised")
    return {"objects": {str(i + 1): {"J": s.j[i].tolist(), "F": s.f[i].tolist()} for i in range(s.j.shape[0])},
            "assignment": s.assignment}


def davis_summary(per_set: dict[str, dict[str, dict]]) -> dict:
    """{set: {video: sequence scores}} -> J / F / J&F per set and their mean over sets (the Ref-DAVIS17 number)."""
    from vglamm.evaluation.vos import summarize

    sets = {}
    for name, videos in per_set.items():
        per_object = {f"{v}_{o}": (np.asarray(s["J"]), np.asarray(s["F"]))
                      for v, seq in videos.items() for o, s in seq["objects"].items()}
        summ = summarize(per_object)
        summ.pop("per_object")
        sets[name] = summ
    mean = lambda k: float(np.mean([s[k] for s in sets.values()])) if sets else float("nan")  # noqa: E731
    return {"J&F": mean("J&F-Mean"), "J": mean("J-Mean"), "F": mean("F-Mean"), "per_annotator": sets}


class RefDavisRunner(Runner):
    """Ref-DAVIS17 (ReferFormer layout); see the module docstring."""

    name = "refdavis"

    def __init__(self, data: Path, split: str = "valid"):
        self.data, self.split = Path(data), split
        meta_path = self.data / "meta_expressions" / split / "meta_expressions.json"
        if not meta_path.exists():
            raise DataFormatError(f"{meta_path} not found: --data must be a Ref-DAVIS17 root in ReferFormer's layout "
                                  f"(meta_expressions/{split}/meta_expressions.json, {split}/JPEGImages, "
                                  f"{split}/Annotations).")
        self.videos = read_json(meta_path)["videos"]
        self.frames_dir = self.data / split / "JPEGImages"
        self.ann_dir = self.data / split / "Annotations"
        self.has_ground_truth = self.ann_dir.is_dir()

    def keys(self) -> list[str]:
        return sorted(self.videos)

    def _objects(self, video: str) -> list[list[tuple[str, str]]]:
        """Per annotator set, the (exp_id, text) of each object in order."""
        exps = list(self.videos[video]["expressions"].items())
        if len(exps) % DAVIS_ANNOTATORS:
            raise DataFormatError(f"Ref-DAVIS17 video {video} has {len(exps)} expressions: expected 4 per object "
                                  "(2 annotators x first-frame / full-video), ordered object by object.")
        n_obj = len(exps) // DAVIS_ANNOTATORS
        return [[(str(exps[o * DAVIS_ANNOTATORS + a][0]), exps[o * DAVIS_ANNOTATORS + a][1]["exp"])
                 for o in range(n_obj)] for a in range(DAVIS_ANNOTATORS)]

    def _gt(self, video: str) -> np.ndarray:
        names = self.videos[video]["frames"]
        return np.stack([read_label_png(self.ann_dir / video / f"{n}.png") for n in names])

    def infer(self, model, key: str, pred_root: Path, opts: RunOptions) -> dict:
        from vglamm.io.masks import save_davis_pngs

        names = self.videos[key]["frames"]
        frames = _frames(self.frames_dir / key, names)
        shape = frames.shape[:3]
        gt = self._gt(key) if self.has_ground_truth else None
        result: dict = {"video": key, "sets": {}}
        for a, objects in enumerate(self._objects(key)):
            masks, exps = [], []
            for exp_id, text in objects:
                try:
                    masks.append(model.segment(frames, text, mode=opts.mode))
                    exps.append({"exp_id": exp_id, "exp": text, "no_target": False})
                except NoTargetFoundError:
                    masks.append(None)
                    exps.append({"exp_id": exp_id, "exp": text, "no_target": True})
            labels = davis_label_map(masks, shape)
            save_davis_pngs(pred_root / f"anno_{a}" / key, labels, names)
            entry = {"expressions": exps}
            if gt is not None:
                entry.update(davis_sequence_scores(gt, labels))
            result["sets"][f"anno_{a}"] = entry
        return result

    def merge(self, results: dict[str, dict], pred_root: Path) -> dict:
        exps = [e for r in results.values() for s in r["sets"].values() for e in s["expressions"]]
        counts = {"num_videos": len(results), "num_expressions": len(exps),
                  "no_target": sum(e["no_target"] for e in exps)}
        if not self.has_ground_truth:
            return {**counts, "scored": False, "reason": f"no ground truth at {self.ann_dir}"}
        per_set = {f"anno_{a}": {v: r["sets"][f"anno_{a}"] for v, r in results.items()}
                   for a in range(DAVIS_ANNOTATORS)}
        return {**davis_summary(per_set), **counts}

    def score_predictions(self, pred_root: Path, keys: list[str]) -> dict:
        if not self.has_ground_truth:
            raise DataFormatError(f"no ground truth at {self.ann_dir}: nothing to score against.")
        per_set: dict = {}
        for a in range(DAVIS_ANNOTATORS):
            per_set[f"anno_{a}"] = {}
            for video in keys:
                folder = pred_root / f"anno_{a}" / video
                files = [folder / f"{n}.png" for n in self.videos[video]["frames"]]
                labels = np.stack([read_label_png(f) for f in files]) if all(f.exists() for f in files) else None
                per_set[f"anno_{a}"][video] = davis_sequence_scores(self._gt(video), labels)
        return {**davis_summary(per_set), "num_videos": len(keys)}

    def describe(self) -> dict:
        return {"benchmark": self.name, "data": str(self.data.resolve()), "split": self.split}


# ------------------------------------------------------------------------------------------------------ MeViS
class MevisRunner(Runner):
    """MeViS (or Ref-YouTube-VOS) referring segmentation; see the module docstring."""

    name = "mevis"

    def __init__(self, data: Path, split: str = "valid"):
        self.data, self.split = Path(data), split
        if (self.data / "meta_expressions.json").exists():  # a MeViS split folder
            meta_path, self.frames_dir = self.data / "meta_expressions.json", self.data / "JPEGImages"
            mask_path = self.data / "mask_dict.json"
        elif (self.data / "meta_expressions" / split / "meta_expressions.json").exists():  # Ref-YouTube-VOS
            meta_path = self.data / "meta_expressions" / split / "meta_expressions.json"
            self.frames_dir, mask_path = self.data / split / "JPEGImages", None
        else:
            raise DataFormatError(f"no meta_expressions.json in {self.data} or {self.data}/meta_expressions/{split}: "
                                  "--data must be a MeViS split folder or a Ref-YouTube-VOS root.")
        self.meta = read_json(meta_path)
        self.videos = self.meta.get("videos", self.meta)
        self.mask_dict = read_json(mask_path) if mask_path is not None and mask_path.exists() else None
        self.has_ground_truth = self.mask_dict is not None

    def keys(self) -> list[str]:
        return list(self.videos)

    def infer(self, model, key: str, pred_root: Path, opts: RunOptions) -> dict:
        from vglamm.evaluation.mevis import mevis_ground_truth
        from vglamm.evaluation.vos import boundary_f, region_similarity
        from vglamm.io.masks import save_submission_pngs

        meta = self.videos[key]
        names = meta["frames"]
        frames = _frames(self.frames_dir / key, names)
        result: dict = {"video": key, "expressions": {}}
        for exp_id, e in meta["expressions"].items():
            try:
                masks, no_target = np.asarray(model.segment(frames, e["exp"], mode=opts.mode), bool), False
            except NoTargetFoundError:
                masks, no_target = np.zeros(frames.shape[:3], bool), True
            save_submission_pngs(pred_root, key, exp_id, masks, names)
            row: dict = {"exp": e["exp"], "no_target": no_target}
            if self.mask_dict is not None:
                gt = mevis_ground_truth(meta, exp_id, self.mask_dict, size=masks.shape[1:])
                row.update(J=float(region_similarity(gt, masks).mean()), F=float(boundary_f(gt, masks).mean()))
            result["expressions"][str(exp_id)] = row
        return result

    def merge(self, results: dict[str, dict], pred_root: Path) -> dict:
        rows = [row for v in self.keys() if v in results for row in results[v]["expressions"].values()]
        counts = {"num_videos": len(results), "num_expressions": len(rows),
                  "no_target": sum(r["no_target"] for r in rows)}
        if not self.has_ground_truth:
            return {**counts, "scored": False,
                    "reason": "no mask_dict.json: this split is scored on the server (use --zip)"}
        j = float(np.mean([r["J"] for r in rows])) if rows else float("nan")
        f = float(np.mean([r["F"] for r in rows])) if rows else float("nan")
        return {"J": j, "F": f, "J&F": (j + f) / 2, **counts}

    def score_predictions(self, pred_root: Path, keys: list[str]) -> dict:
        from vglamm.evaluation.mevis import evaluate_mevis, read_prediction_folder

        if not self.has_ground_truth:
            raise DataFormatError(f"no mask_dict.json in {self.data}: this split is scored on the server.")
        meta = {"videos": {v: self.videos[v] for v in keys}}
        res = evaluate_mevis(meta, self.mask_dict, read_prediction_folder(pred_root, meta))
        res.pop("per_expression")
        return res

    def write_zip(self, pred_root: Path, keys: list[str], zip_path: Path, root_name: str = "") -> Path:
        from vglamm.evaluation.mevis import write_mevis_submission
        from vglamm.io.masks import load_submission_pngs

        def items():
            for v in keys:
                for exp_id in self.videos[v]["expressions"]:
                    masks, names = load_submission_pngs(pred_root, v, exp_id, return_names=True)
                    yield v, exp_id, names, masks

        return write_mevis_submission(items(), zip_path, root_name=root_name)

    def describe(self) -> dict:
        return {"benchmark": self.name, "data": str(self.data.resolve()), "split": self.split}


# ------------------------------------------------------------------------------------------------------ GCG
@dataclass
class GCGScoring:
    """How GCG predictions are scored: phrase encoder for Recall, caption metrics, CLAIR judge."""

    phrase_encoder: str | None = "auto"
    captions: bool = True
    clair: Any = None
    _encoder: Any = field(default=None, repr=False)

    def encoder(self):
        from vglamm.evaluation.phrase_encoders import load_phrase_encoder

        if self._encoder is None and self.phrase_encoder:
            self._encoder = load_phrase_encoder(self.phrase_encoder)
        return self._encoder


class GCGRunner(Runner):
    """Grounded conversation generation on the VideoGLaMM GCG test JSON; see the module docstring."""

    name = "gcg"

    def __init__(self, data: Path, split: str = "test", frames_root: Path | None = None,
                 scoring: GCGScoring | None = None):
        from training.data.video_gcg import read_video_gcg

        data = Path(data)
        if data.is_dir():
            cands = [data / "instruction_data" / f"{split}.json", data / f"{split}.json"]
            found = next((c for c in cands if c.exists()), None)
            if found is None:
                raise DataFormatError(f"no GCG JSON in {data} (looked for {', '.join(map(str, cands))}).")
            data = found
        self.json_path = data
        self.frames_root = Path(frames_root) if frames_root is not None else data.parent
        videos, anns = read_video_gcg(data)
        self.videos = {str(v.id): v for v in videos}
        self.anns = {a.id: a for a in anns}
        self.scoring = scoring or GCGScoring()

    def keys(self) -> list[str]:
        return list(self.videos)

    def ground_truth(self, key: str) -> tuple[list[np.ndarray], list[str], str]:
        """(masks (T,H,W) per phrase, phrases, clean caption) of one video."""
        from training.data.video_gcg import render_gcg_caption
        from vglamm.evaluation.gcg import extract_phrases

        v = self.videos[key]
        answer, seg_ids = render_gcg_caption(v.dense_cap)
        masks = []
        for ids in seg_ids:
            m = np.zeros((v.length, v.height, v.width), bool)
            for a in ids:
                for t in range(v.length):
                    m[t] |= self.anns[a].mask(t)
            masks.append(m)
        return masks, extract_phrases(answer), v.dense_cap.caption

    def infer(self, model, key: str, pred_root: Path, opts: RunOptions) -> dict:
        from vglamm.evaluation.gcg import gcg_miou
        from vglamm.modeling.processing import gcg_prompt

        v = self.videos[key]
        frames = _frames_from_files([self.frames_root / f for f in v.file_names])
        ans = model.chat(frames, gcg_prompt(), mode=opts.mode, max_new_tokens=opts.max_new_tokens)
        masks = [remove_small_components(o.masks) for o in ans.objects]
        phrases = [o.phrase for o in ans.objects]
        _write_rle_prediction(pred_root / f"{key}.json", masks, phrases, frames.shape[1:3],
                              [Path(f).stem for f in v.file_names], video=key, caption=ans.text,
                              raw_text=ans.raw_text)
        gt_masks, gt_phrases, _ = self.ground_truth(key)
        return {"video": key, "caption": ans.text, "raw_text": ans.raw_text, "phrases": phrases,
                "no_target": not ans.objects, "num_pred": len(masks), "num_gt": len(gt_phrases),
                "mIoU": gcg_miou(masks, gt_masks)}

    def score_predictions(self, pred_root: Path, keys: list[str]) -> dict:
        from vglamm.evaluation.gcg import GCGRecord, evaluate_gcg

        records = []
        for key in keys:
            gt_masks, gt_phrases, gt_caption = self.ground_truth(key)
            pred = _read_rle_prediction(pred_root / f"{key}.json")
            objs = pred["objects"] if pred else []
            records.append(GCGRecord(key, gt_masks, gt_phrases, [o["masks"] for o in objs],
                                     [o["phrase"] or "" for o in objs], gt_caption,
                                     (pred or {}).get("caption", "")))
        res = evaluate_gcg(records, encoder=self.scoring.encoder(), captions=self.scoring.captions,
                           clair=self.scoring.clair)
        if not self.scoring.captions:
            res["skipped"].update({"METEOR": "--no-captions", "CIDEr": "--no-captions"})
        res["num_missing"] = sum(not (pred_root / f"{k}.json").exists() for k in keys)
        return res

    def describe(self) -> dict:
        return {"benchmark": self.name, "data": str(self.json_path.resolve()),
                "frames_root": str(self.frames_root.resolve())}


def _frames_from_files(paths: list[Path]) -> np.ndarray:
    from training.data.base import read_frames

    return read_frames(paths)


# ------------------------------------------------------------------------------------------------------ VidSTG
VIDSTG_PROMPTS = {"interrogative": "{caption} Please respond with segmentation masks.",
                  "declarative": "Can you segment {caption} in this video?"}


class VidSTGRunner(Runner):
    """Spatio-temporal grounding on the minimal VidSTG layout of the module docstring."""

    name = "vidstg"

    def __init__(self, data: Path):
        self.data = Path(data)
        qdir = self.data / "questions"
        if not qdir.is_dir():
            raise DataFormatError(f"{qdir} not found: --data must hold questions/<id>.json and frames/<video>/ "
                                  "(see vglamm.evaluation.runners).")
        self.questions = {p.stem: p for p in sorted(qdir.glob("*.json"))}

    def keys(self) -> list[str]:
        return list(self.questions)

    def question(self, key: str) -> dict:
        from training.data.base import list_frame_files

        q = read_json(self.questions[key])
        try:
            qtype, caption, video = q["qtype"], q["caption"], q["video"]
            boxes = {int(t): [float(x) for x in b] for t, b in q["boxes"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataFormatError(f"{self.questions[key]}: missing or bad field {e}; expected video, qtype, "
                                  "caption, boxes {t: [x1, y1, x2, y2]}.") from None
        if qtype not in VIDSTG_PROMPTS:
            raise DataFormatError(f"{self.questions[key]}: qtype {qtype!r} is not one of {sorted(VIDSTG_PROMPTS)}.")
        folder = self.data / "frames" / video
        files = ([_find(folder, n) for n in q["frames"]] if "frames" in q else list_frame_files(folder))
        return {"video": video, "qtype": qtype, "caption": caption, "boxes": boxes, "files": files}

    def infer(self, model, key: str, pred_root: Path, opts: RunOptions) -> dict:
        from vglamm.evaluation.grounding import grounding_video_iou

        q = self.question(key)
        frames = _frames_from_files(q["files"])
        prompt = VIDSTG_PROMPTS[q["qtype"]].format(caption=q["caption"].strip())
        ans = model.chat(frames, prompt, mode=opts.mode, max_new_tokens=opts.max_new_tokens)
        masks = [remove_small_components(ans.objects[0].masks)] if ans.objects else []
        _write_rle_prediction(pred_root / f"{key}.json", masks, [ans.objects[0].phrase] if masks else [],
                              frames.shape[1:3], [f.stem for f in q["files"]], video=q["video"],
                              raw_text=ans.raw_text)
        pred = masks[0] if masks else np.zeros(frames.shape[:3], bool)
        viou, _ = grounding_video_iou(pred, q["boxes"])
        return {"question": key, "video": q["video"], "qtype": q["qtype"], "prompt": prompt,
                "raw_text": ans.raw_text, "no_target": not masks, "gt_viou": viou}

    def score_predictions(self, pred_root: Path, keys: list[str]) -> dict:
        from PIL import Image

        from vglamm.evaluation.grounding import GroundingRecord, evaluate_grounding

        records = []
        for key in keys:
            q = self.question(key)
            pred = _read_rle_prediction(pred_root / f"{key}.json")
            if pred and pred["objects"]:
                masks = pred["objects"][0]["masks"]
            else:
                with Image.open(q["files"][0]) as im:
                    masks = np.zeros((len(q["files"]), im.height, im.width), bool)
            records.append(GroundingRecord(key, masks, q["boxes"], q["qtype"]))
        res = evaluate_grounding(records)
        res["num_questions"] = len(records)
        return res

    def describe(self) -> dict:
        return {"benchmark": self.name, "data": str(self.data.resolve())}


def _find(folder: Path, name: str) -> Path:
    from training.data.mevis import find_frame

    return find_frame(folder, name)


# ------------------------------------------------------------------------------------------------------ driver
def _barrier_if_distributed(world: int) -> bool:
    """Under torchrun (MASTER_ADDR set) join a gloo group and wait for every rank. -> whether a barrier happened."""
    if world <= 1 or "MASTER_ADDR" not in os.environ:
        return False
    import datetime

    import torch.distributed as dist

    if not dist.is_available():
        return False
    created = not dist.is_initialized()
    if created:
        # Joined only after inference, with a long timeout: ranks finish their shards at different times.
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
    dist.barrier()
    if created:
        dist.destroy_process_group()
    return True


def _check_run_record(out: Path, record: dict) -> None:
    path = out / "run.json"
    if path.exists():
        old = read_json(path)
        diff = {k: (old.get(k), v) for k, v in record.items() if old.get(k) != v}
        if diff:
            raise ConfigError(f"{out} holds results of another run (differs in {diff}): choose another --out, or "
                              "delete it to start over.")
    else:
        write_json(path, record)


def load_results(out: Path, keys: Iterable[str]) -> dict[str, dict]:
    folder = out / "per_video"
    return {k: read_json(folder / f"{k}.json") for k in keys if (folder / f"{k}.json").exists()}


def run_benchmark(runner: Runner, out: Path, *, model: Any = None, model_loader: Callable[[], Any] | None = None,
                  opts: RunOptions | None = None, limit: int | None = None, progress: bool = True,
                  merge_only: bool = False, model_name: str | None = None) -> dict | None:
    """Run (this rank's share of) a benchmark with resume, then merge. -> the metrics, or None when this rank
    does not merge (other shards unfinished, or not rank 0 under torchrun)."""
    opts = opts or RunOptions()
    if opts.mode not in ("temporal", "framewise"):
        raise ConfigError(f"--mode {opts.mode!r}: use 'temporal' or 'framewise'.")
    out = Path(out)
    pred_root, per_video = out / "predictions", out / "per_video"
    keys = runner.keys()[:limit] if limit is not None else runner.keys()
    rank, world = shard_info()
    if not merge_only:
        _check_run_record(out, {**runner.describe(), "model": model_name, "mode": opts.mode})
        todo = [k for k in shard(keys, rank, world) if not (per_video / f"{k}.json").exists()]
        it = todo
        if progress and todo:
            from tqdm import tqdm
            it = tqdm(todo, desc=f"{runner.name} [rank {rank}/{world}]" if world > 1 else runner.name, unit="video")
        for key in it:
            if model is None:
                if model_loader is None:
                    raise ConfigError("give --model (or --predictions to score masks made elsewhere).")
                model = model_loader()
            result = runner.infer(model, key, pred_root, opts)
            write_json(per_video / f"{key}.json", result)  # last: its presence means the masks are complete
        if _barrier_if_distributed(world) and rank != 0:
            return None
    elif (out / "run.json").exists():  # report what the shards ran, not this call's defaults
        record = read_json(out / "run.json")
        model_name, opts = record.get("model"), RunOptions(record.get("mode", opts.mode), opts.max_new_tokens)
    results = load_results(out, keys)
    missing = [k for k in keys if k not in results]
    if missing:
        if merge_only:
            raise DataFormatError(f"{len(missing)} of {len(keys)} per-video results are missing under {per_video} "
                                  f"(first: {missing[0]}): finish every shard before --merge-only.")
        print(f"rank {rank}: {len(keys) - len(missing)}/{len(keys)} videos done; run with --merge-only once every "
              "rank has finished.")
        return None
    metrics = {"benchmark": runner.name, **runner.merge(results, pred_root), "mode": opts.mode, "model": model_name}
    write_json(out / "metrics.json", metrics)
    return metrics
