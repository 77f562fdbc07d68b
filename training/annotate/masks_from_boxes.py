"""Box -> mask back-ends for streams 2 and 3: SAM2's video predictor, or a box-filling fallback.

Both take the item's frames ``(T,H,W,3) uint8`` and ``{obj_id: (T,4) float}`` boxes (x0, y0, x1, y1 in pixels,
NaN on frames where the object has no box) and return ``{obj_id: (T,H,W) bool}``.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from vglamm.errors import ConfigError, MaskError, MissingWeightsError


class MaskBackend(Protocol):
    name: str

    def __call__(self, frames: np.ndarray, boxes: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]: ...


def box_visible(boxes: np.ndarray) -> np.ndarray:
    """(T,) bool: frames with a valid box."""
    boxes = np.asarray(boxes, dtype=float)
    return np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def fill_box(h: int, w: int, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = np.zeros((h, w), dtype=bool)
    m[max(0, int(np.floor(y0))):min(h, int(np.ceil(y1))), max(0, int(np.floor(x0))):min(w, int(np.ceil(x1)))] = True
    return m


def _check(frames: np.ndarray, boxes: Mapping[int, np.ndarray]) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MaskError(f"frames must be (T,H,W,3) uint8, got {frames.shape} {frames.dtype}")
    for o, b in boxes.items():
        if np.asarray(b).shape != (len(frames), 4):
            raise MaskError(f"object {o}: boxes must be ({len(frames)}, 4), got {np.asarray(b).shape}")


class BoxFillMasks:
    """The box itself as the mask: quality-independent, for tests and as a last-resort baseline."""

    name = "box-fill"

    def __call__(self, frames: np.ndarray, boxes: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
        _check(frames, boxes)
        t, h, w = frames.shape[:3]
        out = {}
        for o, b in boxes.items():
            vis = box_visible(b)
            out[o] = np.stack([fill_box(h, w, b[k]) if vis[k] else np.zeros((h, w), bool) for k in range(t)])
        return out


@dataclass
class SAM2MaskConfig:
    """SAM2 video predictor for box prompts.

    config:         a config bundled with the sam2 package (``configs/sam2.1/sam2.1_hiera_l.yaml`` is what the
                    paper's data generation used).
    checkpoint:     the matching ``.pt``; ``None`` builds random weights (tests only: masks are arbitrary).
    image_size:     override the model's input size (e.g. 128 for fast CPU tests); ``None`` keeps the config's.
    prompt_frames:  ``"all"`` prompts with the box on every frame that has one (the paper's VidSTG/HC-STVG
                    recipe), ``"first"`` only on each object's first box, letting SAM2 track the rest.
    restrict_to_boxes: clear the mask on frames where the input gives no box (the object is absent there).
    empty_to_box:   on a boxed frame where SAM2 returns an empty mask, use the filled box instead.
    """

    config: str = "configs/sam2.1/sam2.1_hiera_l.yaml"
    checkpoint: str | None = None
    device: str = "cpu"
    image_size: int | None = None
    prompt_frames: str = "all"
    restrict_to_boxes: bool = True
    empty_to_box: bool = False
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.prompt_frames not in ("all", "first"):
            raise ConfigError(f"prompt_frames must be 'all' or 'first', got {self.prompt_frames!r}")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise MissingWeightsError(f"SAM2 checkpoint {self.checkpoint} not found; download the one matching "
                                      f"{self.config}, or pass checkpoint=None for random weights (tests)")


class SAM2BoxMasks:
    """Prompt SAM2's video predictor with each object's boxes and propagate through the clip (both directions).

    The predictor is built once and shared; calls are serialised because its state is per call but the model is
    one (on a GPU, one video at a time is also the memory-safe choice).
    """

    name = "sam2"

    def __init__(self, cfg: SAM2MaskConfig | None = None):
        self.cfg = cfg or SAM2MaskConfig()
        self._predictor = None
        self._lock = threading.Lock()

    def _build(self):
        if self._predictor is None:
            from sam2.build_sam import build_sam2_video_predictor

            extra = list(self.cfg.overrides)
            if self.cfg.image_size is not None:
                extra.append(f"++model.image_size={int(self.cfg.image_size)}")
            self._predictor = build_sam2_video_predictor(self.cfg.config, ckpt_path=self.cfg.checkpoint,
                                                         device=self.cfg.device, hydra_overrides_extra=extra)
        return self._predictor

    def __call__(self, frames: np.ndarray, boxes: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
        import torch
        from PIL import Image

        _check(frames, boxes)
        t, h, w = frames.shape[:3]
        visible = {o: box_visible(b) for o, b in boxes.items()}
        out = {o: np.zeros((t, h, w), dtype=bool) for o in boxes}
        prompted = [o for o in boxes if visible[o].any()]
        if not prompted:
            return out
        device = torch.device(self.cfg.device)
        # sam2 keeps its memory features in bfloat16 and relies on autocast to match dtypes; on CPU that needs
        # an explicit CPU autocast, on CUDA it is the setting its own demos use.
        autocast = torch.autocast(device.type, dtype=torch.bfloat16)
        with self._lock, tempfile.TemporaryDirectory(prefix="vglamm-sam2-") as tmp, torch.inference_mode(), autocast:
            predictor = self._build()
            # init_state reads a folder of "<index>.jpg" frames (its MP4 path needs decord and re-decodes).
            for k, frame in enumerate(frames):
                Image.fromarray(frame).save(Path(tmp) / f"{k:05d}.jpg", quality=95)
            state = predictor.init_state(tmp)
            first = t
            for o in prompted:
                frames_with_box = np.flatnonzero(visible[o])
                if self.cfg.prompt_frames == "first":
                    frames_with_box = frames_with_box[:1]
                for k in frames_with_box:
                    predictor.add_new_points_or_box(state, frame_idx=int(k), obj_id=int(o),
                                                    box=np.asarray(boxes[o][k], dtype=np.float32))
                first = min(first, int(frames_with_box[0]))
            runs = [predictor.propagate_in_video(state)]
            if first > 0:
                runs.append(predictor.propagate_in_video(state, reverse=True))
            for run in runs:
                for k, obj_ids, logits in run:
                    masks = (logits[:, 0] > 0).float().cpu().numpy().astype(bool)
                    for o, m in zip(obj_ids, masks):
                        out[int(o)][k] = m
            predictor.reset_state(state)
        for o in boxes:
            if self.cfg.restrict_to_boxes:
                out[o][~visible[o]] = False
            if self.cfg.empty_to_box:
                for k in np.flatnonzero(visible[o]):
                    if not out[o][k].any():
                        out[o][k] = fill_box(h, w, boxes[o][k])
        return out
