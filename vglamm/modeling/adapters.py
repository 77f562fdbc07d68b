"""Adapters between the vision and language sides.

* :class:`VisionAdapter` (V→L, one per encoder): Linear-GELU-Linear into the LLM width, then average pooling of each
  frame's token grid. Parameters ``proj.0`` / ``proj.2`` correspond to the reference's ``mm_projector.{0,2}``
  (video) and ``image_mm_projector.{0,2}`` (CLIP).
* :class:`SegAdapter` (L→V): Linear-ReLU-Linear from the LLM width to SAM2's prompt width. ``proj.0`` / ``proj.2``
  correspond to the reference's ``text_hidden_fcs.0.{0,2}``. Optionally (not in the paper) the ``[SEG]`` state also
  attends over the visual tokens the LLM saw, and what it reads there is added to the prompt.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vglamm.errors import ConfigError


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
    """Hidden states that predict ``[SEG]`` (N, D_llm) → SAM2 prompt tokens (N, seg_dim).

    ``heads > 0`` adds a visual readout: each state, with the words of its phrase, as a query, attends over its
    video's visual tokens (the LLM's inputs, with a learnt embedding per token position) and the result, projected,
    is added to the MLP's prompt.
    The projection starts at zero, so the adapter starts as the paper's. Why: a phrase like "the car moving left"
    points at an object by what the tokens at its place show (motion), while SAM2 needs what it looks like (colour,
    category); the readout fetches the latter from where the former matches, which a small LLM trained from nothing
    does not learn to do in its own layers (docs/design.md).
    """

    def __init__(self, in_dim: int, out_dim: int = 256, *, heads: int = 0, num_visual: int = 0):
        super().__init__()
        self.heads = heads
        if heads:
            if in_dim % heads:
                raise ConfigError(f"adapters.seg_attention_heads={heads} must divide the LLM width {in_dim}")
            self.query_norm, self.visual_norm = nn.LayerNorm(in_dim), nn.LayerNorm(in_dim)
            self.visual_pos = nn.Parameter(torch.zeros(num_visual, in_dim))
            self.phrase_proj = nn.Linear(in_dim, in_dim)
            self.attn = nn.MultiheadAttention(in_dim, heads, batch_first=True)
            self.readout = nn.Linear(in_dim, out_dim)
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)
        self.proj = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))
        # Start with prompts of unit scale, like SAM2's own point embeddings (sin/cos features): torch's default
        # init gives ~0.2, and SAM2's decoder then learns to ignore the prompt and segment every salient object
        # for every [SEG] (measured: two objects stuck at IoU 0.5 each). Pretrained checkpoints overwrite this.
        nn.init.kaiming_normal_(self.proj[0].weight, nonlinearity="relu")
        nn.init.normal_(self.proj[2].weight, std=in_dim ** -0.5)
        for layer in (self.proj[0], self.proj[2]):
            nn.init.zeros_(layer.bias)

    def forward(self, hidden: torch.Tensor, visual: torch.Tensor | None = None, rows: torch.Tensor | None = None,
                phrase: torch.Tensor | None = None, with_attention: bool = False):
        """``visual`` (B, V, D_llm): the visual tokens of each video; ``rows`` (N,): the video of each state (all
        the first when None); ``phrase`` (N, D_llm): the mean input embedding of each state's phrase tokens
        (``processing.phrase_token_weights``; zeros for a state without one). Used when ``heads > 0``, else ignored.
        -> prompts (N, out_dim), or with ``with_attention`` (prompts, the readout's attention over the V tokens
        averaged over heads (N, V), None without a readout), for a loss on where it looks (training)."""
        hidden = hidden.to(self.proj[0].weight.dtype)
        prompts = self.proj(hidden)
        if not self.heads:
            return (prompts, None) if with_attention else prompts
        if visual is None:
            raise ConfigError("this L->V adapter reads the visual tokens (adapters.seg_attention_heads > 0): "
                              "pass them with the [SEG] states")
        visual = visual.to(hidden.dtype)
        if visual.shape[1] != self.visual_pos.shape[0]:
            raise ConfigError(f"the L->V adapter was built for {self.visual_pos.shape[0]} visual tokens per video, "
                              f"got {visual.shape[1]}: keep num_frames and the adapters' pools of its config")
        keys = self.visual_norm(visual + self.visual_pos)
        keys = keys[rows] if rows is not None else keys[:1].expand(len(hidden), -1, -1)
        query = self.query_norm(hidden)
        if phrase is not None:  # the phrase's words as a bag: what to look for, read directly (docs/design.md)
            query = query + self.phrase_proj(phrase.to(hidden.dtype))
        read, attention = self.attn(query[:, None], keys, keys, need_weights=with_attention)
        prompts = prompts + self.readout(read[:, 0])
        return (prompts, attention[:, 0]) if with_attention else prompts
