"""Where each ``[SEG]``'s object is among the visual tokens: targets for the L->V adapter's visual readout.

The readout (``adapters.seg_attention_heads``) answers "the car moving left" by attending to the tokens whose cells
move left and reading what SAM2 needs there (colour, category, size). Taught only through the prompt-distillation
and mask losses, it finds those tokens slowly: in the one-hour recipe (1500 binding + 1200 full-model steps) motion
``[SEG]``s still pointed at their object at chance (benchmarks/probe_binding.py: 0.575, chance 0.592), though the
video tokens already told the motion of 0.72 of the moving cells (the token probe). Every grounded sample carries
the masks of its ``[SEG]``s, so where the readout should look is known: this module turns each mask into a
distribution over the visual tokens (its cover of each token's cell, frame by frame, in the CLIP stream and the
InternVideo2 stream), and ``readout_attention_loss`` pulls the readout's attention onto it
(the recipe's ``readout_weight``).

    batch["readout_targets"] = readout_targets(samples, batch["num_seg"], model.cfg)
    out = model(batch)  # out.readout_loss
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vglamm.modeling.processing import llm_frame_indices

__all__ = ["readout_targets", "token_cover", "visual_token_cover"]


def token_cover(masks: torch.Tensor, pool: int, crop_square: bool) -> torch.Tensor:
    """(N,T,H,W) masks -> (N, T*pool*pool) share of each token's cell each mask covers, frame-major, cells
    row-major (the V->L adapter's token order). ``crop_square``: the stream sees the centre square of the frame
    (CLIP's resize-and-crop), else the whole frame stretched to a square (InternVideo2's)."""
    n, t, h, w = masks.shape
    if crop_square:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        masks = masks[..., top:top + side, left:left + side]
    cover = F.adaptive_avg_pool2d(masks.float().flatten(0, 1), pool)
    return cover.reshape(n, t * pool * pool)


def visual_token_cover(masks, cfg) -> torch.Tensor:
    """(N,T,H,W) masks at a sample's frames -> (N, V): each mask's cover of the cells of the V visual tokens the
    model builds from ``cfg`` (a VideoGLaMMConfig) at the LLM's frames, CLIP's tokens then InternVideo2's."""
    masks = torch.as_tensor(np.asarray(masks))
    masks = masks[:, torch.as_tensor(llm_frame_indices(masks.shape[1], cfg.num_frames))]
    streams = [token_cover(masks, cfg.adapters.image_pool, crop_square=True)]
    if cfg.use_video_encoder:
        streams.append(token_cover(masks, cfg.adapters.video_pool, crop_square=False))
    return torch.cat(streams, dim=1)


def readout_targets(samples: Sequence, num_seg: Sequence[int], cfg) -> torch.Tensor | None:
    """(S, V) target attention of every ``[SEG]`` of a batch (in the processor's order: sample by sample, the first
    ``num_seg[i]`` masks of each): each mask's :func:`visual_token_cover`, normalised to sum to 1; NaN rows for a
    ``[SEG]`` whose object is not visible in the LLM's frames. None when the batch has no ``[SEG]``."""
    rows = []
    for s, n in zip(samples, num_seg):
        if int(n) == 0:
            continue
        cover = visual_token_cover(s.masks[:int(n)], cfg)
        total = cover.sum(1, keepdim=True)
        rows.append(torch.where(total > 0, cover / total.clamp_min(1e-12), torch.full_like(cover, float("nan"))))
    return torch.cat(rows) if rows else None
