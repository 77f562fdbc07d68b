"""The three annotation streams of the paper (§4, Fig. 3). Each turns one input item and its frames into a
grounded caption plus a mask track per object; gates and writing happen in the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vglamm.errors import ConfigError

from . import prompts
from .backends import ChatRequest
from .cache import CachedClient
from .inputs import ItemInput
from .masks_from_boxes import MaskBackend, box_visible
from .parsing import AnswerParseError, GroundedCaption, extract_text, parse_grounded_caption
from .visual import RED, crop, draw_boxes, mask_box, pick


@dataclass
class StreamConfig:
    """prompt_frames: frames attached to a whole-video request; crops_per_object: crops shown in stream 1's step 1;
    json_mode: ask the server for a JSON response (OpenAI ``response_format``) where the prompt wants JSON."""

    prompt_frames: int = 8
    crops_per_object: int = 4
    crop_size: int = 224
    max_tokens: int = 512
    temperature: float = 0.2
    json_mode: bool = False


@dataclass
class StreamContext:
    vision: CachedClient
    text: CachedClient
    masks: MaskBackend | None
    cfg: StreamConfig = field(default_factory=StreamConfig)

    def ask(self, client: CachedClient, prompt: str, images=(), *, json_answer: bool = False) -> str:
        return client.ask(ChatRequest(prompt, list(images), system=prompts.SYSTEM, max_tokens=self.cfg.max_tokens,
                                      temperature=self.cfg.temperature, json_mode=json_answer and self.cfg.json_mode))


@dataclass
class StreamResult:
    caption: GroundedCaption
    masks: dict[int, np.ndarray]      # obj_id -> (T,H,W) bool on the item's frames
    visible: dict[int, np.ndarray]    # obj_id -> (T,) bool, where the input says the object is present
    notes: dict[str, object] = field(default_factory=dict)  # intermediate answers, kept for review


def _plain(answer: str, what: str) -> str:
    text = " ".join(answer.split())
    if not text:
        raise AnswerParseError(f"empty {what}")
    return text


# ------------------------------------------------------------------------------------------ stream 1: masks only

def annotate_from_masks(item: ItemInput, frames: np.ndarray, frame_indices: np.ndarray,
                        ctx: StreamContext) -> StreamResult:
    """Crops -> rough description -> refined on boxed frames -> dense caption on frames with every box labelled."""
    cfg = ctx.cfg
    hw = frames.shape[1:3]
    masks = {o.id: o.masks_at(frame_indices, hw) for o in item.objects}
    visible = {o: m.any(axis=(1, 2)) for o, m in masks.items()}
    boxes = {o: np.array([mask_box(m[k]) if visible[o][k] else [np.nan] * 4 for k in range(len(frames))], float)
             for o, m in masks.items()}
    shown = [o.id for o in item.objects if visible[o.id].any()]
    notes: dict[str, object] = {"rough": {}, "refined": {}}
    refined = {}
    for obj in item.objects:
        if obj.id not in shown:
            continue  # absent from every sampled frame: nothing to describe, and the gates will not expect it
        where = np.flatnonzero(visible[obj.id])
        # 1. rough description from crops that follow the object through the video
        crops = [crop(frames[k], boxes[obj.id][k], size=cfg.crop_size) for k in where[pick(len(where),
                                                                                              cfg.crops_per_object)]]
        rough = _plain(ctx.ask(ctx.vision, prompts.describe_object_crop(obj.category), crops), "rough description")
        # 2. refine it on full frames with this object's box drawn
        sel = where[pick(len(where), cfg.prompt_frames)]
        boxed = [draw_boxes(frames[k], {obj.id: boxes[obj.id][k]}, {obj.id: RED}) for k in sel]
        answer = ctx.ask(ctx.vision, prompts.refine_object_description(obj.id, obj.category, rough), boxed,
                         json_answer=True)
        refined[obj.id] = extract_text(answer, "description")
        notes["rough"][obj.id] = rough
        notes["refined"][obj.id] = refined[obj.id]
    if not refined:
        raise AnswerParseError("no object is visible in the sampled frames")
    # 3. dense caption on frames with every object's box labelled by id
    sel = pick(len(frames), cfg.prompt_frames)
    labelled = [draw_boxes(frames[k], {o: boxes[o][k] for o in shown}) for k in sel]
    answer = ctx.ask(ctx.vision, prompts.dense_caption_from_objects(refined), labelled, json_answer=True)
    notes["dense_answer"] = answer
    return StreamResult(parse_grounded_caption(answer), masks, visible, notes)


# ----------------------------------------------------------------------------------------------- boxes -> masks

def _object_summary(item: ItemInput, boxes: dict[int, np.ndarray], hw) -> dict[int, str]:
    """``{id: "person, first seen at (0.12, 0.30)-(0.40, 0.95) in frame 0"}`` so a text LLM can tell them apart."""
    h, w = hw
    out = {}
    for obj in item.objects:
        vis = np.flatnonzero(box_visible(boxes[obj.id]))
        what = obj.category or "object"
        if vis.size == 0:
            out[obj.id] = f"{what} (not visible in the sampled frames)"
            continue
        x0, y0, x1, y1 = boxes[obj.id][vis[0]]
        out[obj.id] = (f"{what}, first seen in frame {vis[0]} at ({x0 / w:.2f}, {y0 / h:.2f})-({x1 / w:.2f}, "
                       f"{y1 / h:.2f})")
    return out


def _masks_from_boxes(item: ItemInput, frames: np.ndarray, boxes: dict[int, np.ndarray], ctx: StreamContext):
    if ctx.masks is None:
        raise ConfigError(f"stream for item {item.id} needs a box->mask back-end (SAM2 or box-fill)")
    masks = ctx.masks(frames, boxes)
    return masks, {o: box_visible(b) for o, b in boxes.items()}


# ------------------------------------------------------------------------------- stream 2: boxes and a caption

def annotate_from_boxes_caption(item: ItemInput, frames: np.ndarray, frame_indices: np.ndarray,
                                ctx: StreamContext) -> StreamResult:
    """Video model's detailed caption + the given caption -> LLM grounded caption; masks from the boxes."""
    boxes = {o.id: o.boxes_at(frame_indices) for o in item.objects}
    sel = pick(len(frames), ctx.cfg.prompt_frames)
    detailed = _plain(ctx.ask(ctx.vision, prompts.detailed_video_caption(), frames[sel]), "detailed caption")
    answer = ctx.ask(ctx.text, prompts.grounded_caption_from_caption(
        item.caption or "", detailed, _object_summary(item, boxes, frames.shape[1:3])), json_answer=True)
    caption = parse_grounded_caption(answer)
    masks, visible = _masks_from_boxes(item, frames, boxes, ctx)
    return StreamResult(caption, masks, visible, {"detailed": detailed, "dense_answer": answer})


# ---------------------------------------------------------------------- stream 3: boxes and referring expressions

def annotate_from_boxes_expressions(item: ItemInput, frames: np.ndarray, frame_indices: np.ndarray,
                                    ctx: StreamContext) -> StreamResult:
    """LLM turns the referring expressions into one grounded caption; masks from the boxes."""
    boxes = {o.id: o.boxes_at(frame_indices) for o in item.objects}
    answer = ctx.ask(ctx.text, prompts.grounded_caption_from_expressions(
        item.expressions, _object_summary(item, boxes, frames.shape[1:3])), json_answer=True)
    caption = parse_grounded_caption(answer)
    masks, visible = _masks_from_boxes(item, frames, boxes, ctx)
    return StreamResult(caption, masks, visible, {"dense_answer": answer})


STREAM_FUNCS: dict[str, Callable[..., StreamResult]] = {
    "masks": annotate_from_masks,
    "boxes-captions": annotate_from_boxes_caption,
    "boxes-expressions": annotate_from_boxes_expressions,
}
