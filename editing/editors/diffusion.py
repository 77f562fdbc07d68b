"""Generative editors on diffusers: ``diffusion`` (WanVACEPipeline, video + mask) and ``sd_inpaint``
(a per-frame image inpainting pipeline such as StableDiffusionInpaintPipeline).

The pipelines have constraints the user should not have to know about; this module handles them:

* size: height/width multiples of 16 (8 for SD) → reflect-pad, run, crop the padding back off;
* length: WanVACE takes 4k+1 frames → short clips are padded in time; long ones run in overlapping windows
  cross-faded across the seams (per frame the blend weights sum to one, every frame is covered);
* small objects: edited in a crop around the object's box, upscaled to the pipeline's resolution, then
  resized and pasted back (the flow composites, so only the mask region lands in the output);
* memory: ``cpu_offload=True`` calls ``enable_model_cpu_offload`` for small GPUs; ``seed`` makes runs repeatable.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from editing.editors._util import mask_box
from editing.editors.registry import register_editor
from vglamm.errors import ConfigError, MissingWeightsError

WAN_VACE_IDS = ("Wan-AI/Wan2.1-VACE-1.3B-diffusers", "Wan-AI/Wan2.1-VACE-14B-diffusers")


@dataclass
class DiffusionOptions:
    pipeline: Any = None             # hub id, local dir, or a ready pipeline object (required)
    negative_prompt: str | None = None
    num_inference_steps: int = 30
    guidance_scale: float = 5.0
    conditioning_scale: float = 1.0
    seed: int | None = 0             # None: nondeterministic
    window: int = 81                 # frames per pipeline call (rounded to 4k+1)
    overlap: int = 16                # frames shared by consecutive windows, cross-faded
    max_area: int = 480 * 832        # the pipeline's working resolution (pixels per frame)
    crop: bool = True                # edit small objects in a crop around their box
    crop_below: float = 0.3          # ... when the box covers less than this fraction of the frame
    crop_margin: float = 0.25        # context around the box, as a fraction of its size
    multiple: int | None = None      # size multiple; None: from the pipeline (16 for Wan, 8 for SD)
    cpu_offload: bool = False        # enable_model_cpu_offload() when loading (small GPUs)
    device: str | None = None        # None: cuda when available
    torch_dtype: str | None = None   # None: bfloat16 on cuda, float32 on cpu
    pipeline_kwargs: dict = field(default_factory=dict)  # passed to every pipeline call


# ----------------------------------------------------------------------------------------------- loading
_LOADED: dict[tuple, Any] = {}


def load_pipeline(spec, cls_name: str, options: DiffusionOptions):
    """A ready pipeline from an object (returned as is), a local directory or a hub id (cached per process)."""
    if spec is None:
        raise ConfigError("the diffusion editor needs a pipeline: pass pipeline=<hub id or local dir> "
                          f"(e.g. {WAN_VACE_IDS[0]!r}) or a loaded diffusers pipeline object, "
                          "or choose a no-weights editor (recolor, blur, pixelate, remove, background, highlight).")
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    key = (str(spec), cls_name, options.device, options.torch_dtype, options.cpu_offload)
    if key in _LOADED:
        return _LOADED[key]
    import diffusers
    import torch

    cuda = torch.cuda.is_available()
    dtype = getattr(torch, options.torch_dtype) if options.torch_dtype else (torch.bfloat16 if cuda else torch.float32)
    try:
        pipe = getattr(diffusers, cls_name).from_pretrained(str(spec), dtype=dtype)
    except (OSError, ValueError) as e:
        raise MissingWeightsError(f"could not load {cls_name} from {spec!r} ({e}). Give a local directory holding "
                                  "the diffusers pipeline, or a hub id reachable from this machine.") from e
    if options.cpu_offload:
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(options.device or ("cuda" if cuda else "cpu"))
    pipe.set_progress_bar_config(disable=True)
    _LOADED[key] = pipe
    return pipe


# ------------------------------------------------------------------------------------------ planning
def round_to_4k1(n: int) -> int:
    """Smallest 4k+1 that is >= n."""
    return 4 * math.ceil(max(n - 1, 0) / 4) + 1


def plan_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) frame windows of length ``window`` (the last one may be shorter only for short clips)
    covering every frame; consecutive windows share at least ``overlap`` frames, the last ends at the end."""
    if window < 1:
        raise ConfigError(f"window must be >= 1, got {window}")
    if num_frames <= window:
        return [(0, num_frames)]
    overlap = min(max(overlap, 0), window - 1)
    stride = window - overlap
    starts = list(range(0, num_frames - window, stride)) + [num_frames - window]
    return [(s, s + window) for s in starts]


def window_weights(windows: list[tuple[int, int]], num_frames: int) -> list[np.ndarray]:
    """Per-window blend weights over its frames: linear ramps across each overlap, normalised so that the
    weights of all windows covering a frame sum to exactly one."""
    raw = []
    for i, (s, e) in enumerate(windows):
        w = np.ones(e - s, np.float64)
        if i > 0:      # ramp up across the overlap with the previous window
            ov = max(windows[i - 1][1] - s, 0)
            w[:ov] = np.minimum(w[:ov], (np.arange(ov) + 1) / (ov + 1))
        if i < len(windows) - 1:  # ramp down across the overlap with the next window
            ov = max(e - windows[i + 1][0], 0)
            if ov:
                w[-ov:] = np.minimum(w[-ov:], (ov - np.arange(ov)) / (ov + 1))
        raw.append(w)
    total = np.zeros(num_frames)
    for (s, e), w in zip(windows, raw):
        total[s:e] += w
    return [w / total[s:e] for (s, e), w in zip(windows, raw)]


@dataclass
class SpatialPlan:
    box: tuple[int, int, int, int]    # (y0, y1, x0, x1) of the source that the pipeline sees
    size: tuple[int, int]             # (h, w) the box is resized to before padding
    padded: tuple[int, int]           # (h, w) after padding to the size multiple


def plan_space(region: np.ndarray, options: DiffusionOptions, multiple: int) -> SpatialPlan:
    """Where (crop box) and at which size the pipeline runs."""
    T, H, W = region.shape
    box = (0, H, 0, W)
    y0, y1, x0, x1 = mask_box(region) or box
    if options.crop and (y1 - y0) * (x1 - x0) < options.crop_below * H * W:
        # One static box for the whole clip (the union over frames), so the crop does not jitter.
        my, mx = int((y1 - y0) * options.crop_margin) + multiple, int((x1 - x0) * options.crop_margin) + multiple
        box = (max(0, y0 - my), min(H, y1 + my), max(0, x0 - mx), min(W, x1 + mx))
    bh, bw = box[1] - box[0], box[3] - box[2]
    scale = math.sqrt(options.max_area / (bh * bw))
    if box == (0, H, 0, W):
        scale = min(scale, 1.0)  # never upscale the whole frame: it only costs time
    h, w = max(1, round(bh * scale)), max(1, round(bw * scale))
    padded = (math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple)
    return SpatialPlan(box, (h, w), padded)


def _to_pipeline_space(frames: np.ndarray, region: np.ndarray, plan: SpatialPlan):
    """Crop, resize and reflect-pad frames; the same for masks (any coverage → regenerate)."""
    y0, y1, x0, x1 = plan.box
    h, w = plan.size
    ph, pw = plan.padded[0] - h, plan.padded[1] - w
    vid, msk = [], []
    for f, m in zip(frames[:, y0:y1, x0:x1], region[:, y0:y1, x0:x1]):
        f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA if h < f.shape[0] else cv2.INTER_CUBIC)
        m = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0
        vid.append(cv2.copyMakeBorder(f, 0, ph, 0, pw, cv2.BORDER_REFLECT_101 if min(h, w) > 1 else cv2.BORDER_REPLICATE))
        msk.append(np.pad(m, ((0, ph), (0, pw))))  # padding is never regenerated
    return np.stack(vid), np.stack(msk)


def _from_pipeline_space(out: np.ndarray, plan: SpatialPlan) -> np.ndarray:
    """(T, ph, pw, 3) float in [0,1] → (T, box_h, box_w, 3) float in [0, 255]."""
    h, w = plan.size
    bh, bw = plan.box[1] - plan.box[0], plan.box[3] - plan.box[2]
    out = out[:, :h, :w].astype(np.float32) * 255.0
    if (h, w) == (bh, bw):
        return out
    return np.stack([cv2.resize(f, (bw, bh), interpolation=cv2.INTER_AREA if h > bh else cv2.INTER_CUBIC)
                     for f in out])


def _generator(seed):
    if seed is None:
        return None
    import torch

    return torch.Generator("cpu").manual_seed(int(seed))


def _frames_of(result) -> np.ndarray:
    """The frames of a pipeline output (``.frames[0]`` for video pipelines, ``.images`` for image ones)."""
    frames = result.frames[0] if hasattr(result, "frames") else result.images
    if hasattr(frames, "detach"):
        frames = frames.detach().float().cpu().numpy()
    if isinstance(frames, list) or hasattr(frames, "convert"):  # PIL images
        frames = np.stack([np.asarray(f.convert("RGB")) for f in (frames if isinstance(frames, list) else [frames])])
        return frames.astype(np.float32) / 255.0
    return np.asarray(frames, np.float32)


# ------------------------------------------------------------------------------------------- editors
@register_editor("diffusion", options=DiffusionOptions, generative=True)
def diffusion(frames: np.ndarray, masks, prompt: str | None, options: DiffusionOptions) -> np.ndarray:
    """Regenerate the masked region with WanVACE (video + mask conditioning), guided by the prompt."""
    from PIL import Image

    # 1. Pipeline and the constraints it imposes
    pipe = load_pipeline(options.pipeline, "WanVACEPipeline", options)
    multiple = options.multiple or 2 * int(getattr(pipe, "vae_scale_factor_spatial", 8))
    window = round_to_4k1(options.window)
    T = frames.shape[0]

    # 2. Where and at which size it runs
    plan = plan_space(masks.region, options, multiple)
    video, region = _to_pipeline_space(frames, masks.region, plan)

    # 3. Windows over time, each padded to 4k+1 frames, cross-faded back together
    windows = plan_windows(T, window, options.overlap)
    weights = window_weights(windows, T)
    acc = np.zeros((T, plan.box[1] - plan.box[0], plan.box[3] - plan.box[2], 3), np.float32)
    for (s, e), wts in zip(windows, weights):
        n = round_to_4k1(e - s)
        idx = np.r_[np.arange(s, e), np.full(n - (e - s), e - 1)]  # repeat the last frame as time padding
        result = pipe(
            prompt=prompt or "",
            negative_prompt=options.negative_prompt,
            video=[Image.fromarray(f) for f in video[idx]],
            mask=[Image.fromarray(m.astype(np.uint8) * 255, mode="L") for m in region[idx]],
            height=plan.padded[0], width=plan.padded[1], num_frames=n,
            num_inference_steps=options.num_inference_steps, guidance_scale=options.guidance_scale,
            conditioning_scale=options.conditioning_scale, generator=_generator(options.seed),
            output_type="np", **options.pipeline_kwargs,
        )
        out = _from_pipeline_space(_frames_of(result)[: e - s], plan)
        acc[s:e] += out * wts[:, None, None, None].astype(np.float32)

    # 4. Paste the box back (the flow composites, so only the mask region reaches the output)
    edited = frames.copy()
    y0, y1, x0, x1 = plan.box
    edited[:, y0:y1, x0:x1] = np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    return edited


@dataclass
class ImageInpaintOptions(DiffusionOptions):
    pipeline_class: str = "StableDiffusionInpaintPipeline"
    guidance_scale: float = 7.5
    max_area: int = 512 * 512
    strength: float = 1.0


@register_editor("sd_inpaint", options=ImageInpaintOptions, generative=True)
def sd_inpaint(frames: np.ndarray, masks, prompt: str | None, options: ImageInpaintOptions) -> np.ndarray:
    """Inpaint the masked region frame by frame with an image inpainting pipeline (same seed every frame)."""
    from PIL import Image

    pipe = load_pipeline(options.pipeline, options.pipeline_class, options)
    multiple = options.multiple or int(getattr(pipe, "vae_scale_factor", 8))
    plan = plan_space(masks.region, options, multiple)
    video, region = _to_pipeline_space(frames, masks.region, plan)
    edited = frames.copy()
    y0, y1, x0, x1 = plan.box
    for t in range(frames.shape[0]):
        if not masks.region[t].any():
            continue
        result = pipe(
            prompt=prompt or "", negative_prompt=options.negative_prompt,
            image=Image.fromarray(video[t]), mask_image=Image.fromarray(region[t].astype(np.uint8) * 255, mode="L"),
            height=plan.padded[0], width=plan.padded[1], strength=options.strength,
            num_inference_steps=options.num_inference_steps, guidance_scale=options.guidance_scale,
            generator=_generator(options.seed), output_type="np", **options.pipeline_kwargs,
        )
        out = _from_pipeline_space(_frames_of(result)[:1], plan)[0]
        edited[t, y0:y1, x0:x1] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return edited
