"""The per-frame image encoder: a CLIP vision tower, its preprocessing written in torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from vglamm.modeling.configuration import ImageEncoderConfig


def clip_preprocess(frames: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """uint8 frames (T,H,W,3) → CLIP pixels (T,3,size,size): resize the short side, center crop, normalise.

    Mirrors ``CLIPImageProcessor`` (bicubic resize of the shortest side, center crop) without torchvision.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T,H,W,3), got {tuple(frames.shape)}")
    x = frames.permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 255)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size] / 255.0
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


class CLIPImageEncoder(nn.Module):
    """CLIP vision tower applied frame by frame; returns the patch tokens of ``select_layer`` (class token dropped).

    ``forward(pixels (B,T,3,S,S)) -> (B,T,N,D)`` with N = (S/patch)², e.g. 576 × 1024 for ViT-L/14-336.
    """

    def __init__(self, cfg: ImageEncoderConfig, vision_model: CLIPVisionModel | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = vision_model if vision_model is not None else CLIPVisionModel(CLIPVisionConfig(**cfg.vision_config))

    @classmethod
    def from_pretrained(cls, cfg: ImageEncoderConfig, **kwargs) -> "CLIPImageEncoder":
        """Load ``cfg.pretrained`` (hub id or folder) and record its vision config in ``cfg``."""
        model = CLIPVisionModel.from_pretrained(cfg.pretrained, **kwargs)
        keep = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size", "projection_dim", "hidden_act", "layer_norm_eps", "num_channels")
        cfg.vision_config = {k: v for k, v in model.config.to_dict().items() if k in keep}
        return cls(cfg, model)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        return clip_preprocess(frames, self.cfg.crop_size, self.cfg.mean, self.cfg.std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        b, t = pixels.shape[:2]
        flat = pixels.flatten(0, 1).to(self.model.dtype)
        out = self.model(pixel_values=flat, output_hidden_states=True)
        tokens = out.hidden_states[self.cfg.select_layer][:, 1:]  # drop the class token
        return tokens.reshape(b, t, tokens.shape[1], tokens.shape[2])
