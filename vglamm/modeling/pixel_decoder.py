"""SAM2 as VideoGLaMM's pixel decoder, prompted by one sparse token per object.

The `sam2` package does the heavy lifting (Hiera + FPN image encoder, prompt encoder, mask decoder,
memory attention, memory encoder). This module only decides how a projected `[SEG]` embedding enters
SAM2 and how frames are walked:

* The prompt is ONE sparse token per object, with no padding point, on every decoded frame, in training
  and in inference alike (the reference trained with ``[text]`` but inferred with ``[padding point, text]``).
* ``framewise``: every frame is decoded alone; ``no_mem_embed`` is added to its features, as SAM2 does
  for a frame without memory. All objects and frames go through the mask decoder in one call.
* ``temporal``: SAM2 memory propagation forward from frame 0 (memory attention over the conditioning
  frame + the last ``num_maskmem - 1`` frames, object pointers, memory encoder), objects as the batch.
  By default every frame after the first is conditioned on the prompt token *and* on memory
  (``prompt_every_frame=True``): the text keeps anchoring the object while memory keeps it consistent,
  and training sees exactly what inference does. With ``prompt_every_frame=False`` later frames get
  SAM2's own "no prompt" input (a padding point), i.e. plain SAM2 tracking.
* Always a single mask output (mask token 0), never multimask selection and never SAM2's
  stability-based fallback: the mask the loss trains is the mask inference returns.
* Returned logits are NOT gated by SAM2's object-score head (that head is not trained by the mask
  losses and a hard -1024 gate would block gradients); the memory, however, is written exactly as SAM2
  writes it (gated mask, blended object pointer), so a pretrained SAM2 memory sees familiar inputs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vglamm.errors import ConfigError, MaskError, MissingWeightsError
from vglamm.modeling.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["PixelDecoderConfig", "FrameFeatures", "SAM2PixelDecoder", "load_sam2_checkpoint", "remove_small_regions"]

# SAM2 marks "object absent" with this logit (sam2.modeling.sam2_base.NO_OBJ_SCORE).
_NO_OBJ_SCORE = -1024.0
# Passed to SAM2 as the clip length. SAM2 caps object pointers at min(num_frames, 16) and normalises their
# temporal encoding by that cap; a fixed large value makes a frame's output independent of how many
# frames follow it, so streaming inference equals decoding the whole clip (and a training clip's prefix).
_UNBOUNDED_FRAMES = 1 << 30


@dataclass
class PixelDecoderConfig:
    """Which SAM2 to build and how to prompt it.

    sam2_config: a config name inside the `sam2` package (``configs/sam2.1/sam2.1_hiera_t.yaml``...).
    image_size: SAM2 input size S (frames are stretched to S x S); low-res logits are S/4.
    ckpt_path: Meta's ``{"model": state_dict}`` checkpoint, or None for random weights.
    prompt_dim: width of the prompt token = SAM2's model width (the neck's ``d_model``; 256 in every bundled
        config, smaller in ``nano()``). Checked against the composed config.
    hydra_overrides: extra Hydra overrides applied to ``sam2_config`` (``++model.key=value``).
    max_hole_area / max_sprinkle_area: SAM2's mask clean-up (its predictors' settings of these names), in pixels of
        the low-res logits: background holes and foreground specks up to this area are flipped before the masks
        are upsampled. Inference only (``predict_video``); 0 = off, as in the paper's setup.
    location_prompt: also prompt SAM2 with where each object is thought to be (not in the paper): a map per object
        and frame (``locations`` of ``decode`` / ``predict_video``; the model passes where its L->V readout looked),
        upsampled onto SAM2's grid and added to its dense (no-mask) prompt through a learnt vector that starts at
        zero, so a decoder with it starts as one without. Decoding without maps is decoding with this off.
    """

    sam2_config: str = "configs/sam2/sam2_hiera_l.yaml"
    image_size: int = 1024
    ckpt_path: Optional[str] = None
    prompt_dim: int = 256
    prompt_every_frame: bool = True
    encode_batch: int = 8  # frames per image-encoder call in encode_frames
    hydra_overrides: list[str] = field(default_factory=list)
    max_hole_area: int = 0
    max_sprinkle_area: int = 0
    location_prompt: bool = False

    @classmethod
    def tiny(cls) -> "PixelDecoderConfig":
        """SAM2.1 Hiera-T at 128 px, random weights (39 M parameters)."""
        return cls(sam2_config="configs/sam2.1/sam2.1_hiera_t.yaml", image_size=128)

    @classmethod
    def nano(cls, image_size: int = 128, trunk: str = "conv") -> "PixelDecoderConfig":
        """SAM2.1 Hiera-T's architecture shrunk to ~1.3 M parameters (width 64), random weights.

        Every SAM2 part is kept (image trunk + FPN, prompt encoder, mask decoder with high-res features, memory
        attention, memory encoder, object pointers); only widths and depths shrink, so a CPU training step
        takes a fraction of ``tiny()``'s. No pretrained checkpoint exists for it: train from scratch.
        trunk: ``"conv"`` (default; :class:`~vglamm.modeling.conv_trunk.ConvTrunk`, learns from scratch much
        faster) or ``"hiera"`` (SAM2's own trunk, shrunk). image_size must be a multiple of 32 (Hiera tiles its
        8x8 window position embedding over the S/4 map; the conv trunk needs a stride-32 map).
        """
        if image_size <= 0 or image_size % 32:
            raise ConfigError(f"nano() image_size must be a positive multiple of 32, got {image_size}")
        if trunk not in ("conv", "hiera"):
            raise ConfigError(f"nano() trunk must be 'conv' or 'hiera', got {trunk!r}")
        return cls(
            sam2_config="configs/sam2.1/sam2.1_hiera_t.yaml",
            image_size=image_size,
            prompt_dim=_NANO["width"],
            hydra_overrides=_nano_overrides(image_size, trunk),
        )

    @classmethod
    def paper(cls, ckpt_path: Optional[str] = None) -> "PixelDecoderConfig":
        """The paper's SAM2 Hiera-L (07/2024 release, ``sam2_hiera_large.pt``) at 1024 px."""
        return cls(sam2_config="configs/sam2/sam2_hiera_l.yaml", image_size=1024, ckpt_path=ckpt_path)

    def validate(self) -> None:
        if self.image_size <= 0 or self.image_size % 16:
            raise ConfigError(f"image_size must be a positive multiple of 16, got {self.image_size}")
        if self.encode_batch < 1:
            raise ConfigError(f"encode_batch must be >= 1, got {self.encode_batch}")
        if min(self.max_hole_area, self.max_sprinkle_area) < 0:
            raise ConfigError(f"max_hole_area and max_sprinkle_area must be >= 0 (0: off), got "
                              f"{self.max_hole_area} and {self.max_sprinkle_area}")
        width = self.model_width()
        if self.prompt_dim != width:
            raise ConfigError(
                f"prompt_dim={self.prompt_dim} but SAM2 config {self.sam2_config!r} (with its overrides) has "
                f"model width {width} (image_encoder.neck.d_model); set prompt_dim={width}"
            )

    def model_width(self) -> int:
        """SAM2's model width (``image_encoder.neck.d_model``): its hidden, prompt and mask-decoder width."""
        return _composed_width(self.sam2_config, self.image_size, tuple(self.hydra_overrides))


# nano(): SAM2.1 Hiera-T's architecture at width 64. Hiera stage widths are 16/32/64/128 (dim_mul 2), so the
# FPN neck's backbone_channel_list (deepest first) is [128, 64, 32, 16]. SAM2Base derives hidden_dim (prompt
# encoder, mask decoder, object pointers) from neck.d_model and mem_dim from memory_encoder.out_dim; the mask
# decoder's conv_s0/conv_s1 project the neck's stride-4/8 levels (d_model wide) to width/8 and width/4 and its
# upscaling path produces the same widths, so only d_model has to agree. Object pointers (width) are split
# into width // mem_dim memory tokens: width must be a multiple of mem_dim. The mask decoder's
# TwoWayTransformer (8 heads, cross-attention at width/2) needs width % 16 == 0; its MLP width (2048) and
# IoU-head width (256) are hard-coded in sam2 and stay.
_NANO = dict(width=64, mem_dim=32, trunk_dim=16, stages=[1, 1, 2, 1], mem_ffn=256)


def _hiera_overrides(trunk: str) -> list[str]:
    return [
        f"{trunk}.embed_dim={_NANO['trunk_dim']}",
        f"{trunk}.num_heads=1",
        f"{trunk}.stages={_NANO['stages']}",
        # blocks 0 | 1 | 2 3 | 4; windows 8/4 on the stride-4/8 maps, the stride-16/32 maps (8x8, 4x4 at 128 px)
        # fit in one window. Block 3 is global like Hiera-T's stage-3 global blocks; a stage's first block
        # (q-pooling) cannot be global in sam2 (it divides by the window size).
        f"{trunk}.window_spec=[8,4,8,4]",
        f"{trunk}.global_att_blocks=[3]",
    ]


def _nano_overrides(image_size: int, trunk_kind: str = "hiera") -> list[str]:
    w, m, d = _NANO["width"], _NANO["mem_dim"], _NANO["trunk_dim"]
    dims = [d * 2**i for i in range(len(_NANO["stages"]))]
    channels = dims[::-1]
    feat = image_size // 16  # memory attention runs on the stride-16 map; RoPE tables sized for it
    trunk, neck = "++model.image_encoder.trunk", "++model.image_encoder.neck"
    mattn, menc = "++model.memory_attention", "++model.memory_encoder"
    if trunk_kind == "conv":  # same stage widths as the shrunk Hiera, so the neck below is unchanged
        trunk_overrides = ["~model.image_encoder.trunk", f"{trunk}._target_=vglamm.modeling.conv_trunk.ConvTrunk",
                           f"{trunk}.dims={dims}"]
    else:
        trunk_overrides = _hiera_overrides(trunk)
    return [
        *trunk_overrides,
        f"{neck}.d_model={w}",
        f"{neck}.backbone_channel_list={channels}",
        f"{neck}.position_encoding.num_pos_feats={w}",
        f"{mattn}.d_model={w}",
        f"{mattn}.num_layers=1",
        f"{mattn}.layer.d_model={w}",
        f"{mattn}.layer.dim_feedforward={_NANO['mem_ffn']}",
        f"{mattn}.layer.self_attention.embedding_dim={w}",
        f"{mattn}.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"{mattn}.layer.cross_attention.embedding_dim={w}",
        f"{mattn}.layer.cross_attention.kv_in_dim={m}",
        f"{mattn}.layer.cross_attention.feat_sizes=[{feat},{feat}]",
        f"{menc}.in_dim={w}",
        f"{menc}.out_dim={m}",
        f"{menc}.position_encoding.num_pos_feats={m}",
        f"{menc}.mask_downsampler.embed_dim={w}",
        # two 4x4/stride-4 convs instead of four 3x3/stride-2 ones (same total stride 16): fewer small ops
        # per temporal step, where per-op overhead dominates at this size
        f"{menc}.mask_downsampler.kernel_size=4",
        f"{menc}.mask_downsampler.stride=4",
        f"{menc}.mask_downsampler.padding=0",
        f"{menc}.fuser.layer.dim={w}",
        f"{menc}.fuser.num_layers=1",
    ]


@dataclass
class FrameFeatures:
    """SAM2 backbone features of T frames, computed once and shared by every object.

    With C = the model width (``prompt_dim``, 256 for Meta's SAM2): image_embed: (T, C, h, w) top-level
    features (no memory added); high_res: [(T, C/8, 4h, 4w), (T, C/4, 2h, 2w)] already projected by the mask
    decoder's conv_s0/conv_s1; pos_embed: (T, C, h, w) positional encoding of the top level (used by memory
    attention).
    """

    image_embed: torch.Tensor
    high_res: list[torch.Tensor]
    pos_embed: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.image_embed.shape[0]

    def frame(self, t: int) -> "FrameFeatures":
        """The features of frame t alone (T = 1)."""
        return FrameFeatures(
            self.image_embed[t : t + 1], [x[t : t + 1] for x in self.high_res], self.pos_embed[t : t + 1]
        )

    @staticmethod
    def expand(one: "FrameFeatures", n: int) -> "FrameFeatures":
        """Features of one frame (T = 1) repeated for n objects (a view, no copy)."""
        return FrameFeatures(one.image_embed.expand(n, -1, -1, -1), [x.expand(n, -1, -1, -1) for x in one.high_res],
                             one.pos_embed.expand(n, -1, -1, -1))

    @staticmethod
    def cat(parts: Sequence["FrameFeatures"]) -> "FrameFeatures":
        return FrameFeatures(
            torch.cat([p.image_embed for p in parts]),
            [torch.cat([p.high_res[i] for p in parts]) for i in range(len(parts[0].high_res))],
            torch.cat([p.pos_embed for p in parts]),
        )


@contextlib.contextmanager
def _quiet_sam2():
    with warnings.catch_warnings():
        # sam2 warns once that its optional CUDA extension `_C` is missing; we never use it (hole filling).
        warnings.filterwarnings("ignore", message=".*_C.*")
        warnings.filterwarnings("ignore", module="sam2")
        import sam2  # noqa: F401  (importing sam2 initialises Hydra's global config module)

        yield


def _compose(sam2_config: str, image_size: int, hydra_overrides: Sequence[str]):
    """The resolved Hydra config of a SAM2 model (nothing instantiated)."""
    with _quiet_sam2():
        from hydra import compose, initialize_config_module
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import OmegaConf

        if not GlobalHydra.instance().is_initialized():
            initialize_config_module("sam2", version_base="1.2")
        overrides = [
            f"++model.image_size={image_size}",
            # batched objects must not interact: SAM2's eval-time non-overlap constraint couples the batch
            "++model.non_overlap_masks_for_mem_enc=false",
            *hydra_overrides,
        ]
        try:
            sam_cfg = compose(config_name=sam2_config, overrides=overrides)
        except Exception as exc:  # hydra raises its own MissingConfigException / override errors
            raise ConfigError(
                f"cannot compose sam2 config {sam2_config!r} with overrides {overrides}: {exc}. "
                "Use a config shipped in the sam2 package, e.g. 'configs/sam2.1/sam2.1_hiera_t.yaml'."
            ) from exc
        OmegaConf.resolve(sam_cfg)
        return sam_cfg


@functools.lru_cache(maxsize=32)
def _composed_width(sam2_config: str, image_size: int, hydra_overrides: tuple[str, ...]) -> int:
    sam_cfg = _compose(sam2_config, image_size, hydra_overrides)
    try:
        return int(sam_cfg.model.image_encoder.neck.d_model)
    except Exception as exc:
        raise ConfigError(f"sam2 config {sam2_config!r} has no model.image_encoder.neck.d_model: {exc}") from exc


def _build_sam2(cfg: PixelDecoderConfig) -> nn.Module:
    """Build a random-weight SAM2Base from the package's Hydra configs, quietly."""
    sam_cfg = _compose(cfg.sam2_config, cfg.image_size, cfg.hydra_overrides)
    with _quiet_sam2():
        from hydra.utils import instantiate

        try:
            return instantiate(sam_cfg.model, _recursive_=True)
        except Exception as exc:  # inconsistent overrides surface here (asserts, bad kwargs, shapes)
            raise ConfigError(
                f"cannot build SAM2 from {cfg.sam2_config!r} with overrides {cfg.hydra_overrides}: {exc}"
            ) from exc


def load_sam2_checkpoint(sam: nn.Module, path_or_state_dict) -> None:
    """Load Meta's SAM2 checkpoint (``{"model": state_dict}`` or a bare state dict) into a SAM2Base.

    Raises MissingWeightsError (missing file or key) or ConfigError (shape mismatch, unexpected key:
    the checkpoint belongs to another SAM2 variant than the config).
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = os.fspath(path_or_state_dict)
        if not os.path.isfile(path):
            raise MissingWeightsError(f"SAM2 checkpoint not found: {path}. Download Meta's .pt or set ckpt_path=None.")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        path, state = "<state dict>", path_or_state_dict
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    own = sam.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise MissingWeightsError(
            f"SAM2 checkpoint {path} lacks {len(missing)} key(s), first {missing[0]!r}; "
            "is it the checkpoint of the configured SAM2 variant?"
        )
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ConfigError(
            f"SAM2 checkpoint {path} has {len(unexpected)} key(s) the configured model lacks, first "
            f"{unexpected[0]!r}; pick the sam2_config matching the checkpoint (sam2 vs sam2.1, size)."
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ConfigError(
                f"SAM2 checkpoint {path}: key {k!r} has shape {tuple(state[k].shape)}, model expects "
                f"{tuple(v.shape)}; pick the matching sam2_config / image_size."
            )
    sam.load_state_dict(state, strict=True)


class _TemporalState:
    """SAM2's output dict for one propagation, pruned to what later frames can still read."""

    def __init__(self, num_maskmem: int, max_obj_ptrs: int):
        self.output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs

    def add(self, t: int, out: dict, is_cond: bool) -> None:
        key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        self.output_dict[key][t] = out
        # Frame t + 1 reads mask memories of frames t+1-(num_maskmem-1) .. t and object pointers of frames
        # t+1-(max_obj_ptrs-1) .. t; anything older is never read again (stride 1, forward tracking).
        non_cond = self.output_dict["non_cond_frame_outputs"]
        for old in [k for k in non_cond if k <= t + 1 - self.max_obj_ptrs]:
            del non_cond[old]
        for old, o in non_cond.items():
            if old <= t + 1 - self.num_maskmem and o.get("maskmem_features") is not None:
                o["maskmem_features"] = None
                o["maskmem_pos_enc"] = None


def preprocess_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T,H,W,3) RGB -> float (T,3,S,S): stretch to S x S (no padding, as the reference), ImageNet
    normalisation. A plain function so data-loader workers can prepare SAM2 pixels without a model."""
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        # antialias: frames are usually shrunk, and SAM2's own loader resizes with PIL (antialiased)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class SAM2PixelDecoder(nn.Module):
    """SAM2 pixel decoder: frames + one ``prompt_dim``-wide prompt per object -> mask logits per object and frame."""

    def __init__(self, cfg: PixelDecoderConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.sam = _build_sam2(cfg)
        if self.sam.hidden_dim != cfg.prompt_dim:
            raise ConfigError(f"SAM2 hidden_dim {self.sam.hidden_dim} != prompt_dim {cfg.prompt_dim}")
        if cfg.ckpt_path:
            load_sam2_checkpoint(self.sam, cfg.ckpt_path)
        if cfg.location_prompt:
            self.location_embed = nn.Parameter(torch.zeros(cfg.prompt_dim))
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def low_res_size(self) -> int:
        return self.cfg.image_size // 4

    # ------------------------------------------------------------------ frames -> features
    def preprocess(self, frames: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """uint8 (T,H,W,3) RGB -> float (T,3,S,S): stretch to S x S (no padding), ImageNet normalisation."""
        x = torch.as_tensor(np.asarray(frames)) if not torch.is_tensor(frames) else frames
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise MaskError(f"frames must be uint8 (T,H,W,3), got {tuple(x.shape)} {x.dtype}")
        return preprocess_frames(x.to(self.pixel_mean.device), self.cfg.image_size)

    def encode_frames(self, pixels: torch.Tensor) -> FrameFeatures:
        """(T,3,S,S) normalised pixels -> FrameFeatures, encoded ``encode_batch`` frames at a time."""
        s = self.cfg.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise MaskError(f"pixels must be (T,3,{s},{s}), got {tuple(pixels.shape)}; use preprocess()")
        pixels = pixels.to(self.sam.no_mem_embed.dtype)  # preprocess() gives float32; the model may be bf16
        parts = [self._encode_batch(pixels[i : i + self.cfg.encode_batch]) for i in range(0, len(pixels), self.cfg.encode_batch)]
        return parts[0] if len(parts) == 1 else FrameFeatures.cat(parts)

    def _encode_batch(self, pixels: torch.Tensor) -> FrameFeatures:
        backbone_out = self.sam.forward_image(pixels)  # applies conv_s0/conv_s1 to the high-res levels
        levels = backbone_out["backbone_fpn"][-self.sam.num_feature_levels :]
        pos = backbone_out["vision_pos_enc"][-1]
        return FrameFeatures(image_embed=levels[-1], high_res=list(levels[:-1]), pos_embed=pos)

    # ------------------------------------------------------------------ features + prompts -> logits
    def decode(self, features: FrameFeatures, prompts: torch.Tensor, mode: str = "framewise",
               locations: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable decode. prompts (N,prompt_dim) -> low-res logits (N,T,S/4,S/4), not thresholded.
        ``locations`` (N,T,h,w): where each object is thought to be on each frame (``cfg.location_prompt``)."""
        prompts = self._check_prompts(prompts)
        locations = self._check_locations(locations, len(prompts), features.num_frames)
        if mode not in ("framewise", "temporal"):
            raise ConfigError(f"mode must be 'framewise' or 'temporal', got {mode!r}")
        if len(prompts) == 0:
            return prompts.new_zeros(0, features.num_frames, self.low_res_size, self.low_res_size)
        if mode == "framewise":
            return self._decode_framewise(features, prompts, locations)
        state = self._new_temporal_state()
        outs = [self._temporal_step(state, features.frame(t), prompts, t, None if locations is None else locations[:, t])
                for t in range(features.num_frames)]
        return torch.stack(outs, dim=1)

    def decode_many(self, features: Sequence[FrameFeatures], prompts: Sequence[torch.Tensor],
                    mode: str = "framewise", locations: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """``decode`` of several clips, each with its own objects (and ``locations``, one (N_i,T_i,h,w) per clip)
        -> one (N_i,T_i,S/4,S/4) per clip, equal to decoding each alone. In temporal mode the objects of clips of
        the same length propagate as one batch (each object reading its own clip's features), so a training batch
        pays SAM2's per-frame steps once, not once per clip."""
        if len(features) != len(prompts) or (locations is not None and len(locations) != len(prompts)):
            raise ConfigError(f"got {len(features)} clips' features, {len(prompts)} prompt sets and "
                              f"{'no' if locations is None else len(locations)} location sets")
        prompts = [self._check_prompts(p) for p in prompts]
        locations = ([None] * len(prompts) if locations is None else
                     [self._check_locations(m, len(p), f.num_frames) for m, p, f in zip(locations, prompts, features)])
        out = [self.decode(f, p, mode=mode, locations=m) if mode != "temporal" or not len(p) else None
               for f, p, m in zip(features, prompts, locations)]
        by_length: dict[int, list[int]] = {}
        for i, f in enumerate(features):
            if out[i] is None:
                by_length.setdefault(f.num_frames, []).append(i)
        for length, clips in by_length.items():
            counts = [len(prompts[i]) for i in clips]

            def per_object(t: int) -> FrameFeatures:  # frame t of every object's own clip
                return FrameFeatures.cat([FrameFeatures.expand(features[i].frame(t), n) for i, n in zip(clips, counts)])

            def where(t: int) -> torch.Tensor | None:
                return None if locations[clips[0]] is None else torch.cat([locations[i][:, t] for i in clips])

            state = self._new_temporal_state()
            batch = torch.cat([prompts[i] for i in clips])
            logits = torch.stack([self._temporal_step(state, per_object(t), batch, t, where(t)) for t in range(length)],
                                 dim=1)
            for i, part in zip(clips, logits.split(counts)):
                out[i] = part
        return out

    def _check_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        if prompts.ndim != 2 or prompts.shape[1] != self.cfg.prompt_dim:
            raise MaskError(f"prompts must be (N,{self.cfg.prompt_dim}), got {tuple(prompts.shape)}")
        return prompts.to(dtype=self.sam.no_mem_embed.dtype)

    def _check_locations(self, locations: torch.Tensor | None, n: int, t: int) -> torch.Tensor | None:
        if locations is None:
            return None
        if not self.cfg.location_prompt:
            raise ConfigError("locations were given to a pixel decoder built without them: set "
                              "pixel_decoder.location_prompt=true (and train it) to prompt SAM2 with locations")
        if locations.ndim != 4 or tuple(locations.shape[:2]) != (n, t):
            raise MaskError(f"locations must be (N={n},T={t},h,w), got {tuple(locations.shape)}")
        return locations.to(dtype=self.sam.no_mem_embed.dtype)

    def _sparse_tokens(self, prompts: torch.Tensor, with_prompt: bool) -> torch.Tensor:
        """(N,1,C): the prompt token, or SAM2's padding point when a frame is not prompted."""
        if with_prompt:
            return prompts[:, None, :]
        n = prompts.shape[0]
        coords = prompts.new_zeros(n, 1, 2)
        labels = -torch.ones(n, 1, dtype=torch.int32, device=prompts.device)
        sparse, _ = self.sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        return sparse

    def _mask_heads(self, image_embed, high_res, sparse, location=None):
        """SAM2's mask decoder with a given sparse prompt (and a (B,h',w') ``location`` map), single-mask output.

        Returns raw low-res logits (B,1,4h,4w), object-score logits (B,1), SAM output token (B,C).
        """
        b, _, h, w = image_embed.shape
        dense = self.sam.sam_prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
        if location is not None:  # the map on SAM2's grid, as SAM2 adds a mask prompt: onto the dense embedding
            grid = F.interpolate(location[:, None], size=(h, w), mode="bilinear", align_corners=False)
            dense = dense + self.location_embed.reshape(1, -1, 1, 1) * grid
        masks, _iou, tokens, obj_logits = self.sam.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            repeat_image=False,
            high_res_features=high_res,
        )
        return masks.float(), obj_logits, tokens[:, 0]

    def _decode_framewise(self, features: FrameFeatures, prompts: torch.Tensor,
                          locations: torch.Tensor | None = None) -> torch.Tensor:
        n, t = prompts.shape[0], features.num_frames

        def per_object(x):  # (T,...) -> (N*T,...): objects share the frame features, never recomputed
            return x.unsqueeze(0).expand(n, *x.shape).reshape(n * t, *x.shape[1:])

        no_mem = self.sam.no_mem_embed.reshape(1, -1, 1, 1) if self.sam.directly_add_no_mem_embed else 0.0
        image_embed = per_object(features.image_embed + no_mem)
        high_res = [per_object(x) for x in features.high_res] if self.sam.use_high_res_features_in_sam else None
        sparse = prompts[:, None, None, :].expand(n, t, 1, prompts.shape[1]).reshape(n * t, 1, -1)
        location = None if locations is None else locations.reshape(n * t, *locations.shape[2:])
        logits, _, _ = self._mask_heads(image_embed, high_res, sparse, location)
        return logits.reshape(n, t, *logits.shape[-2:])

    def _new_temporal_state(self) -> _TemporalState:
        return _TemporalState(self.sam.num_maskmem, self.sam.max_obj_ptrs_in_encoder)

    def _temporal_step(self, state: _TemporalState, feats: FrameFeatures, prompts: torch.Tensor, t: int,
                       location: torch.Tensor | None = None):
        """Decode frame t (features with T=1) for all N objects (``location`` (N,h,w) maps) and write its memory.
        -> (N,h',w') logits."""
        sam = self.sam
        n = prompts.shape[0]
        # SAM2's memory code works on flattened (HW, B, C) features; expand the frame across objects.
        _, c, h, w = feats.image_embed.shape
        flat = feats.image_embed.flatten(2).permute(2, 0, 1).expand(h * w, n, c)
        flat_pos = feats.pos_embed.flatten(2).permute(2, 0, 1).expand(h * w, n, c)
        is_cond = t == 0
        pix_feat = sam._prepare_memory_conditioned_features(
            frame_idx=t,
            is_init_cond_frame=is_cond,
            current_vision_feats=[flat],
            current_vision_pos_embeds=[flat_pos],
            feat_sizes=[(h, w)],
            output_dict=state.output_dict,
            num_frames=_UNBOUNDED_FRAMES,
        )
        high_res = [x.expand(n, *x.shape[1:]) for x in feats.high_res] if sam.use_high_res_features_in_sam else None
        sparse = self._sparse_tokens(prompts, with_prompt=is_cond or self.cfg.prompt_every_frame)
        low_res, obj_logits, token = self._mask_heads(pix_feat, high_res, sparse, location)

        # Memory is written as SAM2 writes it: mask gated by the object score, pointer blended with no_obj_ptr.
        obj_ptr = sam.obj_ptr_proj(token)
        mem_logits = low_res
        if sam.pred_obj_scores:
            appearing = obj_logits > 0
            mem_logits = torch.where(appearing[:, :, None, None], low_res, torch.full_like(low_res, _NO_OBJ_SCORE))
            lam = obj_logits.sigmoid() if sam.soft_no_obj_ptr else appearing.to(obj_ptr.dtype)
            if sam.fixed_no_obj_ptr:
                obj_ptr = lam * obj_ptr
            obj_ptr = obj_ptr + (1 - lam) * sam.no_obj_ptr
        out = {"obj_ptr": obj_ptr, "maskmem_features": None, "maskmem_pos_enc": None}
        if sam.num_maskmem > 0:
            high_res_logits = F.interpolate(
                mem_logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
            out["maskmem_features"], out["maskmem_pos_enc"] = sam._encode_new_memory(
                current_vision_feats=[flat],
                feat_sizes=[(h, w)],
                pred_masks_high_res=high_res_logits.to(flat.dtype),
                object_score_logits=obj_logits,
                is_mask_from_pts=False,
            )
        state.add(t, out, is_cond)
        return low_res[:, 0]

    # ------------------------------------------------------------------ inference over a whole video
    @torch.inference_mode()
    def predict_video(
        self,
        frames: Union[np.ndarray, torch.Tensor, Iterable],
        prompts: torch.Tensor,
        out_size: tuple[int, int],
        mode: str = "temporal",
        chunk: int = 8,
        locations: torch.Tensor | None = None,
        location_frames: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Masks of N objects over a video: (N,T,H,W) bool at ``out_size`` (logits > 0).

        frames: a (T,H,W,3) uint8 array/tensor or an iterable of (H,W,3) uint8 frames, streamed: each
        frame is encoded once, ``chunk`` frames at a time, and only the memory SAM2 can still read is kept.
        locations (N,K,h,w) with location_frames (T,): K maps per object, and which of them belongs to each frame.
        """
        if mode not in ("framewise", "temporal"):
            raise ConfigError(f"mode must be 'framewise' or 'temporal', got {mode!r}")
        if chunk < 1:
            raise ConfigError(f"chunk must be >= 1, got {chunk}")
        prompts = self._check_prompts(prompts.to(self.pixel_mean.device))
        if locations is not None:
            if location_frames is None:
                raise ConfigError("locations need location_frames: which of the K maps belongs to each frame")
            location_frames = torch.as_tensor(np.asarray(location_frames), dtype=torch.long)
            locations = self._check_locations(locations.to(self.pixel_mean.device), len(prompts), locations.shape[1])
        out_h, out_w = int(out_size[0]), int(out_size[1])
        state = self._new_temporal_state()
        masks, t = [], 0
        for batch in _chunks(frames, chunk):
            feats = self.encode_frames(self.preprocess(batch))
            where = None
            if locations is not None:
                if t + feats.num_frames > len(location_frames):
                    raise ConfigError(f"location_frames names {len(location_frames)} frames; the video has more")
                where = locations[:, location_frames[t:t + feats.num_frames]]
            if mode == "framewise":
                logits = self._decode_framewise(feats, prompts, where)
            else:
                steps = [self._temporal_step(state, feats.frame(i), prompts, t + i, None if where is None else where[:, i])
                         for i in range(feats.num_frames)]
                logits = torch.stack(steps, dim=1)
            t += feats.num_frames
            logits = remove_small_regions(logits, self.cfg.max_hole_area, self.cfg.max_sprinkle_area)
            up = F.interpolate(logits, size=(out_h, out_w), mode="bilinear", align_corners=False)
            masks.append((up > 0).cpu())
        if not masks:
            raise MaskError("predict_video got no frames")
        return torch.cat(masks, dim=1)


def remove_small_regions(logits: torch.Tensor, max_hole_area: int, max_sprinkle_area: int) -> torch.Tensor:
    """SAM2's clean-up of mask logits (..., h, w): background components (holes) of at most ``max_hole_area``
    pixels get the score 0.1, then foreground components (specks) of at most ``max_sprinkle_area`` get -0.1.
    8-connected components from OpenCV on the CPU (sam2's own kernel needs its CUDA extension); 0 = off."""
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return logits
    shape = logits.shape
    flat = logits.reshape(-1, *shape[-2:]).float().cpu().numpy().copy()
    for scores in flat:
        if max_hole_area > 0:
            scores[_small_components(scores <= 0, max_hole_area)] = 0.1
        if max_sprinkle_area > 0:
            scores[_small_components(scores > 0, max_sprinkle_area)] = -0.1
    return torch.from_numpy(flat).reshape(shape).to(device=logits.device, dtype=logits.dtype)


def _small_components(region: np.ndarray, max_area: int) -> np.ndarray:
    """Pixels of ``region`` (bool (h, w)) in 8-connected components of at most ``max_area`` pixels."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] <= max_area
    small[0] = False  # label 0 is everything outside the region
    return small[labels]


def _chunks(frames, size: int) -> Iterator[torch.Tensor]:
    """Group frames (array (T,H,W,3) or iterable of (H,W,3)) into uint8 tensors of up to `size` frames."""
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 4:
        for i in range(0, frames.shape[0], size):
            yield torch.as_tensor(frames[i : i + size])
        return
    buf = []
    for f in frames:
        buf.append(torch.as_tensor(np.asarray(f)) if not torch.is_tensor(f) else f)
        if len(buf) == size:
            yield torch.stack(buf)
            buf = []
    if buf:
        yield torch.stack(buf)
