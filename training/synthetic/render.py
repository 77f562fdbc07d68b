"""Drawing: a scene description becomes frames (T,H,W,3) uint8 and visible masks (N,T,H,W) bool.

Every object is a list of filled polygons (:func:`object_parts`). The same polygons are drawn into the frame and
into a label map with identical rasterisation (OpenCV ``fillPoly``, no anti-aliasing, 1/16-pixel vertices), so
a visible mask is exactly the set of pixels that show the object's colours after occlusion by nearer objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .world import Background, Scene, SceneObject

_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices: smooth motion without anti-aliasing
_SCALE = 1 << _SHIFT

WHEEL = (35, 35, 35)
HUB = (150, 150, 150)
WINDOW = (190, 220, 240)
SKIN = (225, 185, 150)


def shade(rgb: tuple[int, int, int], f: float = 0.6) -> tuple[int, int, int]:
    return tuple(int(c * f) for c in rgb)  # type: ignore[return-value]


def tint(rgb: tuple[int, int, int], f: float = 0.5) -> tuple[int, int, int]:
    return tuple(int(c + (255 - c) * f) for c in rgb)  # type: ignore[return-value]


def part_colours(obj: SceneObject) -> set[tuple[int, int, int]]:
    """Every colour the object's drawing may use (its own colour, darker/lighter variants, fixed parts)."""
    return {obj.rgb, shade(obj.rgb), tint(obj.rgb), WHEEL, HUB, WINDOW, SKIN}


@dataclass(frozen=True)
class Part:
    polygon: np.ndarray  # (K, 2) float pixel coordinates
    rgb: tuple[int, int, int]


# Unit circle, reused for wheels, heads and balls.
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 24, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 24, endpoint=False))], axis=1)


def object_parts(obj: SceneObject, t: int) -> list[Part]:
    """The object's polygons at frame ``t``, back to front. Local shapes face right and are mirrored by ``facing``."""
    cx, cy = obj.position(t)
    w, h, f = obj.width, obj.height, obj.facing
    rgb = obj.rgb

    def poly(points) -> np.ndarray:  # local box coordinates in [-0.5, 0.5] -> pixels
        p = np.asarray(points, dtype=np.float64)
        return np.stack([cx + f * p[:, 0] * w, cy + p[:, 1] * h], axis=1)

    def circle(x, y, r_px) -> np.ndarray:  # centre in local coordinates, radius in pixels
        return np.array([cx + f * x * w, cy + y * h]) + _CIRCLE * r_px

    def rect(x0, y0, x1, y1) -> np.ndarray:
        return poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    cat = obj.category
    if cat == "car":
        r = 0.2 * h
        return [
            Part(poly([(-0.5, -0.1), (0.36, -0.1), (0.5, 0.06), (0.5, 0.3), (-0.5, 0.3)]), rgb),  # body
            Part(poly([(-0.3, -0.1), (-0.2, -0.5), (0.14, -0.5), (0.3, -0.1)]), rgb),  # cabin
            Part(poly([(-0.22, -0.14), (-0.15, -0.42), (0.1, -0.42), (0.22, -0.14)]), WINDOW),
            Part(circle(-0.28, 0.3, r), WHEEL), Part(circle(0.28, 0.3, r), WHEEL),
            Part(circle(-0.28, 0.3, 0.45 * r), HUB), Part(circle(0.28, 0.3, 0.45 * r), HUB),
        ]
    if cat == "truck":
        r = 0.18 * h
        return [
            Part(rect(-0.5, -0.5, 0.2, 0.32), rgb),  # cargo box
            Part(poly([(0.23, -0.18), (0.4, -0.18), (0.5, 0.0), (0.5, 0.32), (0.23, 0.32)]), rgb),  # cab
            Part(poly([(0.28, -0.12), (0.38, -0.12), (0.45, 0.02), (0.28, 0.02)]), WINDOW),
            Part(rect(-0.5, 0.2, 0.5, 0.32), shade(rgb)),  # chassis
            Part(circle(-0.34, 0.32, r), WHEEL), Part(circle(-0.1, 0.32, r), WHEEL), Part(circle(0.36, 0.32, r), WHEEL),
        ]
    if cat == "ball":
        r = 0.5 * min(w, h)
        return [
            Part(circle(0.0, 0.0, r), rgb),
            Part(_band(cx, cy, r), shade(rgb)),
            Part(circle(-0.17, -0.17, 0.22 * r), tint(rgb)),  # highlight
        ]
    if cat == "box":
        return [
            Part(rect(-0.5, -0.5, 0.5, 0.5), rgb),
            Part(rect(-0.07, -0.5, 0.07, 0.5), shade(rgb)),  # tape
            Part(rect(-0.5, -0.5, 0.5, -0.38), tint(rgb)),  # lit top edge
        ]
    if cat == "person":
        swing = 0.0
        if obj.is_moving_at(t):
            swing = 0.12 if t % 2 == 0 else -0.12  # legs alternate while walking
        return [
            Part(rect(-0.32 + swing, 0.1, -0.04 + swing, 0.5), shade(rgb)),  # legs
            Part(rect(0.04 - swing, 0.1, 0.32 - swing, 0.5), shade(rgb)),
            Part(poly([(-0.5, -0.22), (0.5, -0.22), (0.42, 0.14), (-0.42, 0.14)]), rgb),  # torso
            Part(circle(0.0, -0.37, 0.13 * h), SKIN),  # head
        ]
    raise ValueError(f"unknown category {cat!r}")  # pragma: no cover - categories are fixed in world.py


def _band(cx: float, cy: float, r: float) -> np.ndarray:
    """A horizontal stripe across a ball: the circle polygon with y clamped to the strip (= strip ∩ disc)."""
    pts = _CIRCLE * r
    pts[:, 1] = np.clip(pts[:, 1], -0.16 * r, 0.16 * r)
    return pts + np.array([cx, cy])


def _fixed(polygon: np.ndarray) -> np.ndarray:
    return np.round(polygon * _SCALE).astype(np.int32).reshape(-1, 1, 2)


def draw_parts(image: np.ndarray, parts: list[Part], value=None) -> None:
    """Fill the parts into ``image`` in order; ``value`` overrides the part colours (for label maps)."""
    for part in parts:
        colour = part.rgb if value is None else value
        cv2.fillPoly(image, [_fixed(part.polygon)], colour, lineType=cv2.LINE_8, shift=_SHIFT)


def silhouette(obj: SceneObject, t: int, height: int, width: int) -> np.ndarray:
    """The object's full (amodal) mask at frame ``t``: it drawn alone on an empty canvas."""
    canvas = np.zeros((height, width), np.uint8)
    draw_parts(canvas, object_parts(obj, t), 1)
    return canvas.astype(bool)


def render_background(bg: Background, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 textured background; deterministic given ``bg`` (its noise has its own seed)."""
    rng = np.random.default_rng(bg.noise_seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c = np.asarray(bg.colours, np.float32)
    if bg.kind == "gradient":
        proj = xx * np.cos(bg.angle) + yy * np.sin(bg.angle)
        a = ((proj - proj.min()) / max(float(np.ptp(proj)), 1.0))[..., None]
        img = c[0] * (1 - a) + c[1] * a
    elif bg.kind == "noise":
        coarse = rng.random((6, 6)).astype(np.float32)
        a = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)[..., None]
        img = c[0] * (1 - a) + c[1] * a
    elif bg.kind == "stripes":
        proj = xx * np.cos(bg.angle) + yy * np.sin(bg.angle)
        a = (np.sin(proj * 2 * np.pi / bg.period) > 0).astype(np.float32)[..., None]
        img = c[0] * (1 - a) + c[1] * a
    elif bg.kind == "checker":
        p = max(int(bg.period), 4)
        a = (((xx // p) + (yy // p)) % 2).astype(np.float32)[..., None]
        img = c[0] * (1 - a) + c[1] * a
    elif bg.kind == "road":
        img = np.empty((height, width, 3), np.float32)
        img[:] = c[0]
        verge = int(0.18 * height)
        img[:verge] = c[1]
        img[height - verge:] = c[1]
        mid, lane_h, dash = height // 2, max(1, height // 64), max(6, width // 10)
        lane = ((xx[0] // dash) % 2 == 0)
        img[mid - lane_h:mid + lane_h, lane] = (230, 230, 215)
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}")  # pragma: no cover
    grain = rng.normal(0.0, 5.0, (height, width, 1)).astype(np.float32)  # fine texture
    return np.clip(img + grain, 0, 255).astype(np.uint8)


def render_scene(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 RGB and visible masks (N, T, H, W) bool, N in ``scene.objects`` order."""
    T, H, W = scene.num_frames, scene.height, scene.width
    background = render_background(scene.background, H, W)
    order = sorted(range(len(scene.objects)), key=lambda i: scene.objects[i].depth)  # far to near
    frames = np.empty((T, H, W, 3), np.uint8)
    labels = np.empty((T, H, W), np.uint8)
    for t in range(T):
        frame, label = frames[t], labels[t]
        frame[:] = background
        label[:] = 0
        for i in order:
            parts = object_parts(scene.objects[i], t)
            draw_parts(frame, parts)
            draw_parts(label, parts, i + 1)
    masks = labels[None] == np.arange(1, len(scene.objects) + 1, dtype=np.uint8)[:, None, None, None]
    return frames, masks
