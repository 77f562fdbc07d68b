"""Background editor: replace everything except the target (colour, image, blur) or cut it out as RGBA."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from editing.colors import find_color_name, parse_color
from editing.editors.registry import register_editor
from vglamm.errors import ConfigError

MODES = ("color", "image", "blur", "transparent")


@dataclass
class BackgroundOptions:
    mode: str | None = None      # "color", "image", "blur", "transparent"; None: from the prompt (default blur)
    color: str | tuple[int, int, int] | None = None  # for mode="color" (default: from the prompt, else green)
    image: str | np.ndarray | None = None            # path or (H,W,3) array for mode="image" (resized to fit)
    blur_sigma: float = 12.0     # for mode="blur"


def _mode_from_prompt(prompt: str) -> str:
    p = prompt.lower()
    if any(w in p for w in ("transparent", "cut out", "cutout", "alpha", "matte")):
        return "transparent"
    if "blur" in p:
        return "blur"
    if find_color_name(p) or "green screen" in p:
        return "color"
    return "blur"


def _load_image(image, size_hw: tuple[int, int]) -> np.ndarray:
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ConfigError(f"background image {image!r} could not be read; give a PNG/JPEG path or an RGB array.")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    image = np.asarray(image, np.uint8)[..., :3]
    return cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)


@register_editor("background", options=BackgroundOptions, region="outside")
def background(frames: np.ndarray, masks, prompt: str | None, options: BackgroundOptions):
    """Replace the background (the target is kept exactly); "transparent" returns RGBA frames."""
    mode = options.mode or _mode_from_prompt(prompt or "")
    if mode not in MODES:
        raise ConfigError(f"unknown background mode {mode!r}; choose one of {MODES}.")
    T, H, W, _ = frames.shape
    if mode == "color":
        name = options.color or find_color_name(prompt or "") or "green"
        return np.broadcast_to(np.array(parse_color(name), np.uint8), frames.shape).copy()
    if mode == "image":
        if options.image is None:
            raise ConfigError("background mode 'image' needs options={'image': path_or_array}.")
        return np.broadcast_to(_load_image(options.image, (H, W)), frames.shape).copy()
    if mode == "blur":
        return np.stack([cv2.GaussianBlur(f, (0, 0), sigmaX=options.blur_sigma, borderType=cv2.BORDER_REFLECT)
                         for f in frames])
    # transparent: same colours, alpha 0 where the background is; compositing turns the soft edge into a matte.
    return np.concatenate([frames, np.zeros((T, H, W, 1), np.uint8)], axis=-1)
