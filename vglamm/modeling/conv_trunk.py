"""A small convolutional image trunk with Hiera's interface, for SAM2 models trained from scratch.

SAM2's image encoder is ``trunk -> FPN neck``; the neck only needs the trunk to return four feature maps at
strides 4, 8, 16 and 32 and to expose ``channel_list`` (deepest first). Hiera is the right trunk for Meta's
pretrained weights, but trained from nothing on a CPU it learns slowly: with a perfect (oracle) prompt, nano SAM2
reaches IoU ~0.30 after 2,500 steps on the synthetic world with Hiera and 0.53 after 2,000 with this trunk
(``benchmarks/probe_prompt_decoder.py --trunk``). Convolutions bring the locality prior that a few thousand
steps cannot teach a windowed transformer.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["ConvTrunk"]


def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    def norm(c: int) -> nn.GroupNorm:
        return nn.GroupNorm(min(8, max(1, c // 4)), c)

    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1), norm(c_out), nn.GELU(),
        nn.Conv2d(c_out, c_out, 3, 1, 1), norm(c_out), nn.GELU(),
    )


class ConvTrunk(nn.Module):
    """Conv stages returning ``[stride 4, 8, 16, 32]`` maps of widths ``dims`` (SAM2's trunk contract)."""

    def __init__(self, dims: Sequence[int] = (16, 32, 64, 128), in_chans: int = 3):
        super().__init__()
        dims = [int(d) for d in dims]
        if len(dims) != 4:
            raise ValueError(f"ConvTrunk needs 4 stage widths (strides 4/8/16/32), got {dims}")
        self.stem = nn.Sequential(_stage(in_chans, dims[0], 2), _stage(dims[0], dims[0], 2))  # stride 4
        self.stages = nn.ModuleList(_stage(dims[i - 1], dims[i], 2) for i in range(1, 4))
        self.channel_list = dims[::-1]  # SAM2's FpnNeck lists the deepest level first

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = [x]
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out
