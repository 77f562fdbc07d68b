"""Colour names → sRGB, and sRGB ↔ CIELAB/LCh helpers (OpenCV's float Lab: L in [0,100])."""

from __future__ import annotations

import cv2
import numpy as np

from vglamm.errors import ConfigError

# A deliberately small, unambiguous set: names users type in prompts.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35), "dark red": (130, 10, 20), "crimson": (200, 20, 60), "maroon": (128, 0, 0),
    "orange": (245, 130, 20), "yellow": (245, 215, 30), "gold": (230, 180, 40), "beige": (225, 210, 170),
    "green": (40, 170, 60), "dark green": (10, 90, 30), "lime": (140, 230, 40), "olive": (128, 128, 30),
    "teal": (0, 128, 128), "cyan": (20, 200, 220), "turquoise": (60, 210, 200),
    "blue": (30, 80, 220), "light blue": (120, 180, 240), "sky blue": (110, 190, 245), "navy": (15, 30, 110),
    "dark blue": (15, 35, 130), "purple": (130, 50, 170), "violet": (150, 90, 220), "magenta": (220, 40, 180),
    "pink": (245, 130, 180), "brown": (125, 75, 35), "tan": (210, 180, 140),
    "white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128), "grey": (128, 128, 128),
    "silver": (190, 190, 195),
}


def parse_color(color) -> tuple[int, int, int]:
    """A colour name, "#rrggbb" or an (r, g, b) triple → an (r, g, b) tuple of ints."""
    if isinstance(color, str):
        key = color.strip().lower()
        if key in COLORS:
            return COLORS[key]
        if key.startswith("#") and len(key) == 7:
            try:
                return tuple(int(key[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
            except ValueError:
                pass
        raise ConfigError(f"unknown colour {color!r}; use a name from {sorted(COLORS)}, '#rrggbb' or an (r, g, b) triple.")
    rgb = tuple(int(c) for c in color)
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ConfigError(f"colour {color!r} must be three integers in 0..255.")
    return rgb  # type: ignore[return-value]


def find_color_name(text: str) -> str | None:
    """The longest colour name appearing as whole words in ``text`` (so "dark blue" wins over "blue")."""
    import re

    text = text.lower()
    for name in sorted(COLORS, key=len, reverse=True):
        if re.search(rf"\b{re.escape(name)}\b", text):
            return name
    m = re.search(r"#[0-9a-f]{6}\b", text)
    return m.group(0) if m else None


def rgb_to_lab(rgb_u8: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 sRGB → (..., 3) float32 CIELAB."""
    flat = rgb_u8.reshape(-1, 1, 3).astype(np.float32) / 255.0  # OpenCV wants an image: N x 1 pixels
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(rgb_u8.shape)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(..., 3) float CIELAB → (..., 3) uint8 sRGB, out-of-gamut values clipped."""
    rgb = cv2.cvtColor(lab.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_Lab2RGB).reshape(lab.shape)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
