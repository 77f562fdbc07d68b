"""The scene model of the synthetic world: objects with attributes and motion, a background, and how to sample them.

A :class:`Scene` is a pure description (no pixels). Everything random is drawn from one ``numpy.random.Generator``,
so a seed fully determines a scene; :mod:`training.synthetic.render` turns a scene into frames and masks.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from vglamm.errors import ConfigError

# Named colours with clearly distinct hues (and black/white), so a colour word always names what is visible.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "blue": (30, 70, 230),
    "green": (30, 165, 55),
    "yellow": (245, 215, 25),
    "orange": (245, 130, 15),
    "purple": (135, 45, 195),
    "pink": (250, 120, 190),
    "cyan": (35, 205, 225),
    "brown": (120, 70, 30),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}

CATEGORIES: tuple[str, ...] = ("car", "truck", "ball", "box", "person")

# Bounding-box size of each category as a fraction of the frame's shorter side (width, height), at scale 1.
CATEGORY_BOX: dict[str, tuple[float, float]] = {
    "car": (0.34, 0.17),
    "truck": (0.46, 0.24),
    "ball": (0.16, 0.16),
    "box": (0.18, 0.18),
    "person": (0.11, 0.30),
}

SIZE_SCALE: dict[str, tuple[float, float]] = {"small": (0.6, 0.72), "large": (1.0, 1.18)}

DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
_DIR_VEC = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

BACKGROUND_KINDS: tuple[str, ...] = ("gradient", "noise", "stripes", "checker", "road")


@dataclass(frozen=True)
class WorldConfig:
    """How clips are sampled. Defaults are small enough to train a model on 2 CPU cores."""

    num_frames: int = 16
    height: int = 128
    width: int = 128
    fps: float = 8.0
    min_objects: int = 2
    max_objects: int = 4
    p_static: float = 0.2  # probability that an object does not move
    p_stop: float = 0.3  # probability that a moving object stops mid-clip
    p_vertical_vehicle: float = 0.15  # cars and trucks mostly drive sideways
    p_same_category: float = 0.35  # re-use an earlier object's category, so colour is needed to tell them apart
    p_same_colour_category: float = 0.12  # ... and its colour too, so size is needed
    min_visible_fraction: float = 0.25  # an object must show at least this much of itself ...
    min_visible_frames: float = 0.8  # ... in at least this fraction of the frames
    max_tries: int = 50

    def validate(self) -> None:
        if not 2 <= self.num_frames <= 512:
            raise ConfigError(f"num_frames={self.num_frames}: use 2..512 frames.")
        if min(self.height, self.width) < 64:
            raise ConfigError(f"frame size {self.height}x{self.width}: use at least 64 px per side.")
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            raise ConfigError(f"objects {self.min_objects}..{self.max_objects}: use 1 <= min <= max <= 6.")
        for name in ("p_static", "p_stop", "p_vertical_vehicle", "p_same_category", "p_same_colour_category",
                     "min_visible_fraction", "min_visible_frames"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}={value}: a probability/fraction must be in [0, 1].")


@dataclass(frozen=True)
class SceneObject:
    """One object: what it is (category, colour, size), where it is, how it moves, and its depth."""

    obj_id: int  # 1-based, unique within the clip
    category: str
    colour: str
    size: str  # "small" | "large"
    width: float  # bounding box in pixels
    height: float
    start: tuple[float, float]  # centre (x, y) at frame 0
    velocity: tuple[float, float]  # pixels per frame while moving
    stop_frame: int | None  # frame from which the object no longer moves (None: moves throughout / static)
    depth: int  # draw order; larger is nearer the camera (drawn later, occludes the others)
    facing: int  # +1 looks right, -1 looks left (vehicles and people are drawn facing their motion)

    @property
    def rgb(self) -> tuple[int, int, int]:
        return PALETTE[self.colour]

    @property
    def direction(self) -> str | None:
        vx, vy = self.velocity
        if vx == 0.0 and vy == 0.0:
            return None
        if abs(vx) >= abs(vy):
            return "right" if vx > 0 else "left"
        return "down" if vy > 0 else "up"

    @property
    def moves(self) -> bool:
        return self.direction is not None

    @property
    def stops(self) -> bool:
        return self.moves and self.stop_frame is not None

    def position(self, t: int) -> tuple[float, float]:
        steps = t if self.stop_frame is None else min(t, self.stop_frame)
        return self.start[0] + self.velocity[0] * steps, self.start[1] + self.velocity[1] * steps

    def is_moving_at(self, t: int) -> bool:
        """Whether the object moves between frame ``t`` and ``t + 1`` (used to animate legs)."""
        return self.moves and (self.stop_frame is None or t < self.stop_frame)


@dataclass(frozen=True)
class Background:
    kind: str  # one of BACKGROUND_KINDS
    colours: tuple[tuple[int, int, int], ...]
    angle: float = 0.0  # radians, for gradients and stripes
    period: float = 16.0  # pixels, for stripes and checker cells
    noise_seed: int = 0  # seeds the texture noise, so rendering needs no generator

    def describe(self) -> str:
        """Words for captions ("a striped background", "a road")."""
        return {"gradient": "a smooth gradient background", "noise": "a mottled background",
                "stripes": "a striped background", "checker": "a checkered background", "road": "a road"}[self.kind]


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    num_frames: int
    fps: float
    background: Background
    objects: tuple[SceneObject, ...] = field(default_factory=tuple)

    def object(self, obj_id: int) -> SceneObject:
        for obj in self.objects:
            if obj.obj_id == obj_id:
                return obj
        raise KeyError(obj_id)


def _muted_colour(rng: np.random.Generator, value: tuple[float, float]) -> tuple[int, int, int]:
    # Desaturated backgrounds keep the saturated palette objects easy to see.
    h, s, v = rng.random(), rng.uniform(0.08, 0.35), rng.uniform(*value)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def sample_background(rng: np.random.Generator) -> Background:
    kind = str(rng.choice(BACKGROUND_KINDS))
    noise_seed = int(rng.integers(0, 2**31 - 1))
    if kind == "road":
        asphalt = int(rng.integers(70, 105))
        verge = _muted_colour(rng, (0.35, 0.6))
        return Background(kind, ((asphalt, asphalt, asphalt), verge), noise_seed=noise_seed)
    c1 = _muted_colour(rng, (0.3, 0.55))
    c2 = _muted_colour(rng, (0.55, 0.8))
    return Background(kind, (c1, c2), angle=float(rng.uniform(0, np.pi)), period=float(rng.uniform(8, 22)),
                      noise_seed=noise_seed)


def _sample_identity(rng: np.random.Generator, cfg: WorldConfig, previous: list[tuple[str, str, str]]
                     ) -> tuple[str, str, str]:
    """(category, colour, size), never equal to an earlier object's triple (so every object has a unique name)."""
    for _ in range(100):
        category = str(rng.choice(CATEGORIES))
        colour = str(rng.choice(list(PALETTE)))
        size = str(rng.choice(("small", "large")))
        r = rng.random()
        if previous and r < cfg.p_same_colour_category:
            category, colour, _ = previous[int(rng.integers(len(previous)))]
        elif previous and r < cfg.p_same_colour_category + cfg.p_same_category:
            category = previous[int(rng.integers(len(previous)))][0]
        if (category, colour, size) not in previous:
            return category, colour, size
    raise ConfigError("could not sample distinct objects; lower max_objects.")  # pragma: no cover


def _sample_object(rng: np.random.Generator, cfg: WorldConfig, obj_id: int, identity: tuple[str, str, str],
                   depth: int) -> SceneObject:
    category, colour, size = identity
    W, H, T = cfg.width, cfg.height, cfg.num_frames
    base = min(W, H)
    scale = rng.uniform(*SIZE_SCALE[size])
    bw, bh = CATEGORY_BOX[category]
    w, h = bw * base * scale, bh * base * scale
    margin_x, margin_y = w / 2 + 1, h / 2 + 1  # keep the whole silhouette inside the frame
    lo = np.array([margin_x, margin_y])
    hi = np.array([W - margin_x, H - margin_y])

    start = rng.uniform(lo, hi)
    velocity = (0.0, 0.0)
    stop_frame: int | None = None
    facing = 1 if rng.random() < 0.5 else -1
    if rng.random() >= cfg.p_static:
        vehicle = category in ("car", "truck")
        horizontal = rng.random() >= (cfg.p_vertical_vehicle if vehicle else 0.5)
        direction = str(rng.choice(("left", "right") if horizontal else ("up", "down")))
        axis = 0 if horizontal else 1
        stops = rng.random() < cfg.p_stop
        moving_frames = int(rng.integers(round(0.35 * (T - 1)), round(0.65 * (T - 1)) + 1)) if stops else T - 1
        moving_frames = max(moving_frames, 1)
        room = hi[axis] - lo[axis]
        # A clearly visible displacement: at least 12% of the frame along the axis, and most of the room there is.
        min_disp = 0.12 * (W if axis == 0 else H)
        if room >= min_disp:
            disp = rng.uniform(max(min_disp, 0.45 * room), 0.95 * room)
            sign = _DIR_VEC[direction][axis]
            start[axis] = rng.uniform(lo[axis], hi[axis] - disp) if sign > 0 else rng.uniform(lo[axis] + disp, hi[axis])
            v = sign * disp / moving_frames
            velocity = (v, 0.0) if axis == 0 else (0.0, v)
            stop_frame = moving_frames if stops else None
            if axis == 0:
                facing = 1 if v > 0 else -1
    return SceneObject(obj_id=obj_id, category=category, colour=colour, size=size, width=float(w), height=float(h),
                       start=(float(start[0]), float(start[1])), velocity=velocity, stop_frame=stop_frame,
                       depth=depth, facing=facing)


def sample_scene(rng: np.random.Generator, cfg: WorldConfig | None = None) -> Scene:
    """Draw one scene description (no visibility check; see ``render.render_clip`` / ``generate.make_clip``)."""
    cfg = cfg or WorldConfig()
    cfg.validate()
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    depths = rng.permutation(n)
    identities: list[tuple[str, str, str]] = []
    objects = []
    for i in range(n):
        identity = _sample_identity(rng, cfg, identities)
        identities.append(identity)
        objects.append(_sample_object(rng, cfg, i + 1, identity, int(depths[i])))
    return Scene(width=cfg.width, height=cfg.height, num_frames=cfg.num_frames, fps=cfg.fps,
                 background=sample_background(rng), objects=tuple(objects))
