"""Run one annotation stream over a batch of videos: parallel, cached, budgeted, resumable, gated.

Output folder layout::

    OUT/items/<id>.json      one produced item (written last, so its presence means the item is complete)
    OUT/frames/<id>/*.jpg    the item's frames (what its masks cover)
    OUT/dropped/<id>.json    an item the quality gates rejected, with the reasons (redone on a rerun)
    OUT/summary.json         produced / dropped / failed / skipped, with reasons
    OUT/cache/               model answers by request hash (default cache location)
    OUT/review/              overlay videos, captions and accepted.json (see review.py)
"""

from __future__ import annotations

import json
import logging
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vglamm.errors import ConfigError, VglammError
from vglamm.io.atomic import write_text_atomic

from .backends import BackendError, BudgetExhausted, ChatBackend
from .cache import CachedClient, RequestBudget, ResponseCache
from .gates import GateConfig, check_item
from .inputs import STREAMS, ItemInput, read_items
from .masks_from_boxes import MaskBackend
from .parsing import AnswerParseError
from .streams import STREAM_FUNCS, StreamConfig, StreamContext, StreamResult

log = logging.getLogger(__name__)


@dataclass
class AnnotationConfig:
    """stream:        "masks" | "boxes-captions" | "boxes-expressions".
    max_frames:    frames kept per video (uniformly sampled); the masks and the GCG record cover these.
    workers:       videos annotated at once (threads: the model calls are I/O bound).
    max_requests:  model calls allowed in this run (cache hits are free); items that need more are skipped.
    cache_dir:     answer cache; default OUT/cache. Share it between runs to reuse answers.
    """

    stream: str
    max_frames: int = 16
    workers: int = 4
    max_requests: int | None = None
    cache_dir: str | None = None
    progress: bool = True
    stream_cfg: StreamConfig = field(default_factory=StreamConfig)
    gates: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self):
        if self.stream not in STREAMS:
            raise ConfigError(f"stream must be one of {', '.join(STREAMS)}, got {self.stream!r}")
        if self.max_frames < 1 or self.workers < 1:
            raise ConfigError("max_frames and workers must be >= 1")


@dataclass
class Summary:
    produced: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    cache_hits: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"produced {len(self.produced)}, already done {len(self.already_done)}, dropped {len(self.dropped)}, "
                 f"failed {len(self.failed)}, skipped {len(self.skipped)}; model requests {self.requests}, "
                 f"cache hits {self.cache_hits}"]
        lines += [f"  dropped {k}: {'; '.join(v)}" for k, v in sorted(self.dropped.items())]
        lines += [f"  failed  {k}: {v}" for k, v in sorted(self.failed.items())]
        lines += [f"  skipped {k}: {v}" for k, v in sorted(self.skipped.items())]
        return "\n".join(lines)


def item_path(out_dir: Path, item_id: str) -> Path:
    return Path(out_dir) / "items" / f"{item_id}.json"


def _load_frames(item: ItemInput, max_frames: int):
    from vglamm.io.video import load_video

    video = load_video(item.video, max_frames=max_frames)
    return video.frames, np.asarray(video.frame_indices), float(video.fps)


def _write_item(out_dir: Path, item: ItemInput, stream: str, frames: np.ndarray, frame_indices: np.ndarray,
                fps: float, res: StreamResult) -> None:
    from PIL import Image

    from vglamm.io.masks import masks_to_rles

    frame_dir = out_dir / "frames" / item.id
    frame_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for k, frame in enumerate(frames):
        name = f"{k:05d}.jpg"
        Image.fromarray(frame).save(frame_dir / name, quality=95)
        names.append(f"frames/{item.id}/{name}")
    mentioned = sorted({o for p in res.caption.phrases for o in p.obj_ids})
    categories = {o.id: o.category for o in item.objects}
    doc = {
        "id": item.id, "stream": stream, "video": str(item.video), "fps": fps,
        "frame_indices": [int(i) for i in frame_indices], "file_names": names,
        "height": int(frames.shape[1]), "width": int(frames.shape[2]),
        "caption": res.caption.marked, "answer": res.caption.answer, "plain": res.caption.plain,
        "phrases": [{"text": p.text, "obj_ids": list(p.obj_ids)} for p in res.caption.phrases],
        "objects": {str(o): {"category": categories.get(o), "segmentations": masks_to_rles(res.masks[o])}
                    for o in mentioned},
        "notes": res.notes,
    }
    write_text_atomic(item_path(out_dir, item.id), json.dumps(doc))  # last: marks the item complete


class AnnotationPipeline:
    """Holds the back-ends; ``run(items_path, out_dir)`` annotates every item not yet written.

    vision: the multimodal model (frames in); text: the LLM for the text-only steps (default: ``vision``);
    masks:  the box->mask back-end for the box streams.
    """

    def __init__(self, config: AnnotationConfig, vision: ChatBackend, text: ChatBackend | None = None,
                 masks: MaskBackend | None = None):
        if config.stream != "masks" and masks is None:
            raise ConfigError(f"stream {config.stream!r} needs a box->mask back-end (SAM2BoxMasks or BoxFillMasks)")
        self.config = config
        self.vision = vision
        self.text = text or vision
        self.masks = masks

    def run(self, items_path: str | Path, out_dir: str | Path) -> Summary:
        cfg = self.config
        out_dir = Path(out_dir)
        # 1. read and validate the whole input first: a format error should cost no model calls
        items = read_items(items_path, cfg.stream)
        # 2. one cache and one budget shared by every thread
        cache = ResponseCache(cfg.cache_dir or out_dir / "cache")
        budget = RequestBudget(cfg.max_requests)
        vision = CachedClient(self.vision, cache, budget)
        text = vision if self.text is self.vision else CachedClient(self.text, cache, budget)
        ctx = StreamContext(vision, text, self.masks, cfg.stream_cfg)
        summary = Summary()
        todo = []
        for item in items:
            if item_path(out_dir, item.id).exists():
                summary.already_done.append(item.id)  # resumable: a written item is never redone
            else:
                todo.append(item)
        # 3. annotate in parallel; every outcome, good or bad, lands in the summary
        with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="annotate") as pool:
            futures = {pool.submit(self._one, item, ctx, out_dir): item for item in todo}
            done = as_completed(futures)
            if cfg.progress:
                from tqdm.auto import tqdm

                done = tqdm(done, total=len(futures), desc=f"annotate {cfg.stream}", unit="video")
            for fut in done:
                item = futures[fut]
                kind, detail = fut.result()
                if kind == "produced":
                    summary.produced.append(item.id)
                else:
                    getattr(summary, kind)[item.id] = detail
        for lst in (summary.produced, summary.already_done):
            lst.sort()
        summary.requests = vision.stats.requests + (text.stats.requests if text is not vision else 0)
        summary.cache_hits = vision.stats.cache_hits + (text.stats.cache_hits if text is not vision else 0)
        write_text_atomic(out_dir / "summary.json", json.dumps(summary.to_json(), indent=1))
        log.info("annotation summary: %s", summary)
        return summary

    def _one(self, item: ItemInput, ctx: StreamContext, out_dir: Path) -> tuple[str, object]:
        """Annotate one item; never raises (the batch goes on), returns (outcome, detail)."""
        try:
            frames, frame_indices, fps = _load_frames(item, self.config.max_frames)
            res = STREAM_FUNCS[self.config.stream](item, frames, frame_indices, ctx)
            reasons = check_item(res.caption, res.masks, res.visible, self.config.gates)
            if reasons:
                write_text_atomic(out_dir / "dropped" / f"{item.id}.json",
                                  json.dumps({"id": item.id, "reasons": reasons, "caption": res.caption.marked,
                                              "notes": res.notes}))
                log.info("%s: dropped: %s", item.id, "; ".join(reasons))
                return "dropped", reasons
            _write_item(out_dir, item, self.config.stream, frames, frame_indices, fps, res)
            (out_dir / "dropped" / f"{item.id}.json").unlink(missing_ok=True)
            return "produced", None
        except BudgetExhausted as e:
            log.info("%s: skipped: %s", item.id, e)
            return "skipped", str(e)
        except AnswerParseError as e:
            log.warning("%s: unparseable model answer: %s", item.id, e)
            return "failed", f"parse: {e}"
        except BackendError as e:
            log.warning("%s: model back-end failed: %s", item.id, e)
            return "failed", f"backend: {e}"
        except VglammError as e:
            log.warning("%s: %s: %s", item.id, type(e).__name__, e)
            return "failed", f"{type(e).__name__}: {e}"
        except Exception as e:  # a bug or a library error on one video must not stop the batch
            log.error("%s: unexpected error\n%s", item.id, traceback.format_exc())
            return "failed", f"unexpected {type(e).__name__}: {e}"


def annotate(items_path: str | Path, out_dir: str | Path, config: AnnotationConfig, *, vision: ChatBackend,
             text: ChatBackend | None = None, masks: MaskBackend | None = None) -> Summary:
    """One-call form of :class:`AnnotationPipeline`."""
    return AnnotationPipeline(config, vision, text, masks).run(items_path, out_dir)
