"""Recolour the target to a named colour, keeping its shading and texture (CIELAB / LCh)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from editing.colors import find_color_name, lab_to_rgb, parse_color, rgb_to_lab
from editing.editors.registry import register_editor
from vglamm.errors import ConfigError


@dataclass
class RecolorOptions:
    color: str | tuple[int, int, int] | None = None  # None: read it from the prompt ("make it blue")
    strength: float = 1.0        # 0 = unchanged, 1 = full target hue and chroma
    lightness: float = 0.0       # 0 keeps the object's lightness; 1 moves its mean lightness to the colour's
    texture: float = 1.0         # how much of the object's own chroma variation is kept (texture, highlights)


@register_editor("recolor", options=RecolorOptions)
def recolor(frames: np.ndarray, masks, prompt: str | None, options: RecolorOptions) -> np.ndarray:
    """Recolour the target: hue and chroma from the colour, lightness (shading) from the source."""
    name = options.color if options.color is not None else find_color_name(prompt or "")
    if name is None:
        raise ConfigError(f"recolor needs a colour: none found in the prompt {prompt!r}. "
                          "Say one (\"make it blue\") or pass options={'color': 'blue'}.")
    target_lab = rgb_to_lab(np.array(parse_color(name), np.uint8))
    t_ab = target_lab[1:]
    t_chroma = float(np.hypot(*t_ab))
    t_dir = t_ab / t_chroma if t_chroma > 1e-3 else np.zeros(2, np.float32)

    out = frames.copy()
    for t in range(frames.shape[0]):
        region = masks.region[t]
        if not region.any():
            continue
        lab = rgb_to_lab(frames[t][region])                     # (N, 3) only the pixels we edit
        chroma = np.hypot(lab[:, 1], lab[:, 2])
        # Texture: chroma relative to the object's median keeps highlights/dirt visible, scaled to the target.
        rel = chroma / max(float(np.median(chroma)), 1.0)
        new_chroma = t_chroma * (1.0 + options.texture * (np.clip(rel, 0.0, 2.0) - 1.0) * 0.5)
        # Very dark or bright pixels can carry little chroma in sRGB: fade it there instead of clipping to noise.
        L = lab[:, 0]
        new_chroma *= np.clip(np.minimum(L, 100.0 - L) / 15.0, 0.0, 1.0)
        new_ab = new_chroma[:, None] * t_dir[None, :]
        if options.lightness:
            L = L + options.lightness * (target_lab[0] - float(L.mean()))
        new = np.concatenate([np.clip(L, 0, 100)[:, None], new_ab], axis=1)
        new = (1 - options.strength) * lab + options.strength * new
        out[t][region] = lab_to_rgb(new)
    # Only the object changes colour: a hard edge at the object's boundary, softened by a pixel, rather than
    # the dilated region's ramp (which would tint the road around a car).
    soft = np.stack([cv2.GaussianBlur(m.astype(np.float32), (0, 0), 1.0) for m in masks.target])
    alpha = np.where(masks.target, np.maximum(soft, 0.5), soft) * masks.region
    return out, alpha.astype(np.float32)
