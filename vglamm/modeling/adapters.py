"""Adapters between the vision and language sides.

* :class:`VisionAdapter` (V→L, one per encoder): Linear-GELU-Linear into the LLM width, then average pooling of each
  frame's token grid. Parameters ``proj.0`` / ``proj.2`` correspond to the reference's ``mm_projector.{0,2}``
  (video) and ``image_mm_projector.{0,2}`` (CLIP).
* :class:`SegAdapter` (L→V): Linear-ReLU-Linear from the LLM width to SAM2's prompt width. ``proj.0`` / ``proj.2``
  correspond to the reference's ``text_hidden_fcs.0.{0,2}``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class VisionAdapter(nn.Module):
    """(B,T,N,D_vis) encoder tokens → (B, T·pool², D_llm) LLM tokens, frame-major.

    Projection comes before pooling, as in the reference (pooling after the MLP is not the same as before it).
    """

    def __init__(self, in_dim: int, out_dim: int, pool: int):
        super().__init__()
        self.pool = pool
        self.proj = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, n, _ = tokens.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"expected a square token grid per frame, got {n} tokens")
        x = self.proj(tokens.to(self.proj[0].weight.dtype))
        d = x.shape[-1]
        if side != self.pool:
            grid = x.reshape(b * t, side, side, d).permute(0, 3, 1, 2)
            x = F.adaptive_avg_pool2d(grid, self.pool).permute(0, 2, 3, 1)
        return x.reshape(b, t * self.pool * self.pool, d)


class SegAdapter(nn.Module):
    """Hidden states that predict ``[SEG]`` (…, D_llm) → SAM2 prompt tokens (…, seg_dim)."""

    def __init__(self, in_dim: int, out_dim: int = 256):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))
        # Start with prompts of unit scale, like SAM2's own point embeddings (sin/cos features): torch's default
        # init gives ~0.2, and SAM2's decoder then learns to ignore the prompt and segment every salient object
        # for every [SEG] (measured: two objects stuck at IoU 0.5 each). Pretrained checkpoints overwrite this.
        nn.init.kaiming_normal_(self.proj[0].weight, nonlinearity="relu")
        nn.init.normal_(self.proj[2].weight, std=in_dim ** -0.5)
        for layer in (self.proj[0], self.proj[2]):
            nn.init.zeros_(layer.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden.to(self.proj[0].weight.dtype))
