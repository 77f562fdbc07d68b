"""InternVideo2 (stage 2, 1B) vision transformer: VideoGLaMM's spatio-temporal encoder.

Written from the published architecture; parameter names match the released
``InternVideo2-stage2_1b-224p-f4.pt`` once the ``vision_encoder.`` prefix is stripped:

    patch_embed.proj.{weight,bias}     Conv3d 3 -> D, kernel = stride = (tubelet 1, 14, 14)
    cls_token                          (1, 1, D)
    pos_embed                          (1, frames*L + 1, D): ONE joint space-time table (not separable),
                                       sized for the 4 frames of a chunk (L = 256 patches per frame)
    blocks.i.norm1.weight              RMSNorm (eps 1e-6, computed in float32), no bias
    blocks.i.attn.qkv.weight           Linear D -> 3D, no bias
    blocks.i.attn.q_norm/k_norm.weight RMSNorm over the full width D (all heads at once): qk-normalisation
    blocks.i.attn.proj.{weight,bias}
    blocks.i.ls1.gamma, ls2.gamma      layer scale (applied in float32)
    blocks.i.norm2.weight, blocks.i.mlp.fc1/fc2.{weight,bias}   hidden int(D * 48/11) = 6144, GELU

Present in the checkpoint but unused by this model (reported by the loader): the blocks after the selected
one (``blocks.39``), ``img_pos_embed`` (single-image table), ``clip_pos_embed``, ``clip_img_pos_embed``,
``clip_projector.*`` (attention pooling), ``clip_decoder.*``, ``final_clip_decoder.*`` (distillation heads),
and everything outside ``vision_encoder.`` (``vision_proj``, ``text_encoder``, ``text_proj``, ``itm_head``, ``temp``).
There is no final norm on the returned features: the reference returns the raw output of block 38.

The MLP uses exact GELU as VideoGPT+ runs it (flash-attn off); the checkpoint was pre-trained with flash-attn's
fused MLP (tanh-approximate GELU). ``gelu_approximate="tanh"`` switches to that.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vglamm.errors import ConfigError, MaskError, MissingWeightsError
from vglamm.modeling.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "InternVideo2Config",
    "InternVideo2Encoder",
    "LoadReport",
    "load_internvideo2_checkpoint",
    "preprocess_frames",
]

CHECKPOINT_PREFIX = "vision_encoder."


@dataclass
class InternVideo2Config:
    """InternVideo2 vision encoder. Defaults are the paper's stage-2 1B model (224 px, 4-frame chunks)."""

    img_size: int = 224
    patch_size: int = 14
    num_frames: int = 4  # frames per jointly-encoded chunk; also sizes the joint pos_embed
    tubelet_size: int = 1
    embed_dim: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_ratio: float = 48 / 11
    qkv_bias: bool = False
    qk_normalization: bool = True
    layerscale_init: float = 1e-5
    norm_eps: float = 1e-6
    return_block: int = -2  # the reference's x_vis_return_idx: features after block depth + return_block
    gelu_approximate: str = "none"

    @classmethod
    def paper(cls) -> "InternVideo2Config":
        return cls()

    @classmethod
    def tiny(cls) -> "InternVideo2Config":
        """2 blocks (features after block 0), width 64, 56 px -> 16 tokens per frame: CPU tests."""
        return cls(img_size=56, embed_dim=64, depth=2, num_heads=4)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    @property
    def num_run_blocks(self) -> int:
        """Blocks actually built and run: up to and including the selected one."""
        return self.depth + self.return_block + 1 if self.return_block < 0 else self.return_block + 1

    def validate(self) -> None:
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if self.tubelet_size < 1 or self.num_frames < 1 or self.num_frames % self.tubelet_size:
            raise ConfigError(f"num_frames ({self.num_frames}) must be a positive multiple of tubelet_size "
                              f"({self.tubelet_size}; the released checkpoint uses 1)")
        if not 1 <= self.num_run_blocks <= self.depth:
            raise ConfigError(f"return_block {self.return_block} selects no block of depth {self.depth}")
        if self.gelu_approximate not in ("none", "tanh"):
            raise ConfigError(f"gelu_approximate must be 'none' or 'tanh', got {self.gelu_approximate!r}")


class RMSNorm(nn.Module):
    """RMS normalisation with a learned scale, computed in float32 (as the reference)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32, as the checkpoint was trained (force_fp32): gamma ~1e-5 underflows in half precision
        return (x.float() * self.gamma.float()).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: InternVideo2Config):
        super().__init__()
        d = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(d, 3 * d, bias=cfg.qkv_bias)
        self.q_norm = RMSNorm(d, cfg.norm_eps) if cfg.qk_normalization else nn.Identity()
        self.k_norm = RMSNorm(d, cfg.norm_eps) if cfg.qk_normalization else nn.Identity()
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        # qk-norm acts on the concatenated heads (width D), before the split into heads
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.view(b, n, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, cfg: InternVideo2Config):
        super().__init__()
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, cfg.embed_dim)
        self.approximate = cfg.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, cfg: InternVideo2Config):
        super().__init__()
        self.norm1 = RMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(cfg.embed_dim, cfg.layerscale_init)
        self.norm2 = RMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.mlp = Mlp(cfg)
        self.ls2 = LayerScale(cfg.embed_dim, cfg.layerscale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: InternVideo2Config):
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv3d(3, cfg.embed_dim, kernel_size=(cfg.tubelet_size, p, p), stride=(cfg.tubelet_size, p, p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,F,H,W) -> (B, F*L, D), frame-major."""
        return self.proj(x).flatten(2).transpose(1, 2)


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_3d_pos_embed(dim: int, grid: int, frames: int) -> torch.Tensor:
    """The reference's initialisation of the joint table: (frames*grid*grid + 1, dim), class row zero.

    3/4 of the channels encode (h, w) (half each), 1/4 encode time. Only used for random-weight models;
    the checkpoint's learned table replaces it.
    """
    if dim % 16:  # keeps every part even-sized; otherwise a plain zero table is fine for random weights
        return torch.zeros(frames * grid * grid + 1, dim)
    d_t, d_s = dim // 4, dim // 4 * 3
    gh, gw = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="xy")
    spatial = np.concatenate([_sincos_1d(d_s // 2, gw), _sincos_1d(d_s // 2, gh)], axis=1)  # (L, d_s)
    temporal = _sincos_1d(d_t, np.arange(frames, dtype=np.float64))  # (F, d_t)
    table = np.concatenate(
        [np.repeat(temporal[:, None], grid * grid, axis=1), np.repeat(spatial[None], frames, axis=0)], axis=-1
    ).reshape(frames * grid * grid, dim)
    # torch.tensor (not from_numpy) so the table is made on the default device, like every other weight
    return torch.tensor(np.concatenate([np.zeros((1, dim)), table]), dtype=torch.float32)


class InternVideo2Encoder(nn.Module):
    """InternVideo2 vision tower: (B,T,3,S,S) ImageNet-normalised frames -> (B,T,L,D) tokens.

    T must be a multiple of ``cfg.num_frames``; each chunk of that many frames is encoded jointly (chunks
    are folded into the batch, so chunks never see each other). Features are the output of the selected
    block (penultimate by default), class token dropped.
    """

    def __init__(self, cfg: InternVideo2Config):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(
            sincos_3d_pos_embed(cfg.embed_dim, cfg.grid, cfg.num_frames // cfg.tubelet_size).unsqueeze(0)
        )
        # Only the blocks that are run exist: the checkpoint's later blocks are reported unused by the loader.
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_run_blocks))
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for i, blk in enumerate(self.blocks):  # depth-scaled residual branches (keeps random models stable)
            blk.attn.proj.weight.data.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * (i + 1)))

    @property
    def out_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def tokens_per_frame(self) -> int:
        return self.cfg.tokens_per_frame

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if pixels.ndim != 5 or pixels.shape[2] != 3 or tuple(pixels.shape[-2:]) != (cfg.img_size, cfg.img_size):
            raise MaskError(
                f"pixels must be (B,T,3,{cfg.img_size},{cfg.img_size}), got {tuple(pixels.shape)}; use preprocess_frames()"
            )
        b, t = pixels.shape[:2]
        if t % cfg.num_frames:
            raise MaskError(f"T={t} is not a multiple of the chunk size {cfg.num_frames}; pad or subsample frames")
        chunks = t // cfg.num_frames
        # (B,T,3,S,S) -> (B*chunks, 3, F, S, S): chunks go to the batch, frames to Conv3d's depth axis
        x = pixels.reshape(b * chunks, cfg.num_frames, 3, cfg.img_size, cfg.img_size).transpose(1, 2)
        x = self.patch_embed(x.to(self.patch_embed.proj.weight.dtype))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = x[:, 1:].reshape(b, t // cfg.tubelet_size, 1, cfg.tokens_per_frame, cfg.embed_dim)
        # a tubelet's tokens stand for each of its frames, so every frame keeps its own grid downstream
        return x.expand(-1, -1, cfg.tubelet_size, -1, -1).reshape(b, t, cfg.tokens_per_frame, cfg.embed_dim)


def preprocess_frames(frames: Union[np.ndarray, torch.Tensor], size: int = 224) -> torch.Tensor:
    """uint8 (T,H,W,3) RGB -> float (T,3,size,size): stretch to size x size (no crop), ImageNet mean/std.

    Bilinear without antialiasing, as the reference's cv2.resize(INTER_LINEAR).
    """
    x = frames if torch.is_tensor(frames) else torch.from_numpy(np.ascontiguousarray(frames))
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise MaskError(f"frames must be uint8 (T,H,W,3), got {tuple(x.shape)} {x.dtype}")
    x = x.permute(0, 3, 1, 2).float() / 255.0
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class LoadReport:
    """What a checkpoint load did: the encoder keys filled, and checkpoint keys this model does not use."""

    loaded: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def _unwrap(state: dict) -> dict:
    # DeepSpeed / trainer wrappers seen around InternVideo2 checkpoints
    for key in ("module", "model", "state_dict"):
        if key in state and isinstance(state[key], dict):
            return state[key]
    return state


def load_internvideo2_checkpoint(
    encoder: InternVideo2Encoder, path_or_state_dict: Union[str, os.PathLike, dict]
) -> LoadReport:
    """Fill `encoder` from an InternVideo2 checkpoint (keys under ``vision_encoder.``, or already stripped).

    Every checkpoint tensor is either loaded or listed in ``report.unused``. Raises MissingWeightsError when
    the file or a needed key is missing, ConfigError when a tensor's shape differs from the model's.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = os.fspath(path_or_state_dict)
        if not os.path.isfile(path):
            raise MissingWeightsError(f"InternVideo2 checkpoint not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        path, state = "<state dict>", path_or_state_dict
    state = _unwrap(state)
    prefixed = any(k.startswith(CHECKPOINT_PREFIX) for k in state)
    ours = {}  # stripped name -> checkpoint name
    for k in state:
        if not prefixed:
            ours[k] = k
        elif k.startswith(CHECKPOINT_PREFIX):
            ours[k[len(CHECKPOINT_PREFIX) :]] = k
    own = encoder.state_dict()
    for name, param in own.items():
        if name not in ours:
            raise MissingWeightsError(
                f"InternVideo2 checkpoint {path} lacks {CHECKPOINT_PREFIX if prefixed else ''}{name}; "
                "is it the stage-2 vision encoder?"
            )
        got = tuple(state[ours[name]].shape)
        if got != tuple(param.shape):
            raise ConfigError(
                f"InternVideo2 checkpoint {path}: {ours[name]} has shape {got}, model expects "
                f"{tuple(param.shape)}; check InternVideo2Config (size, num_frames, depth)."
            )
    with torch.no_grad():
        for name, param in own.items():
            param.copy_(state[ours[name]])
    used = {ours[n] for n in own}
    return LoadReport(loaded=sorted(own), unused=sorted(k for k in state if k not in used))
