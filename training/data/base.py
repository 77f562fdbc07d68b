"""What every loader shares: the frame-sampling config, object-covering frame choice, frame reading, the base class."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vglamm.errors import DataFormatError
from vglamm.sample import GroundedSample

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class FrameSampling:
    """How a loader picks the T frames it gives the model from a clip.

    num_frames:    T (clips shorter than this give all their frames); ``0`` or less means every frame.
    cover_objects: first choose frames so that every grounded object is visible in at least one of them,
                   then fill the rest uniformly (the reference does this for GCG, where an object absent from
                   every sampled frame would be an unanswerable ``[SEG]``).
    random:        draw the covering frames and the fill at random (training) instead of deterministically;
                   draws are seeded by ``(seed, epoch, index)`` so a run is reproducible.
    seed:          base seed for ``random`` and for choosing question templates.
    """

    num_frames: int = 8
    cover_objects: bool = True
    random: bool = False
    seed: int = 0


def select_frames(n_total: int, cfg: FrameSampling, presence: np.ndarray | None = None,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Sorted source indices of the frames to use.

    presence: (N, n_total) bool, object n visible in frame t. With ``cfg.cover_objects`` the result contains,
    for every object visible somewhere, a frame where it is visible (greedy set cover: each pick shows the most
    not-yet-covered objects), as long as T allows; the remaining slots are filled as evenly as possible.
    """
    if n_total <= 0:
        raise DataFormatError("cannot sample frames from a clip with no frames")
    k = n_total if cfg.num_frames <= 0 else min(cfg.num_frames, n_total)
    if k == n_total:
        return np.arange(n_total)
    if cfg.random and rng is None:
        rng = np.random.default_rng(cfg.seed)
    chosen: list[int] = []
    # the k segment centres: the uniform choice, and what deterministic picks are steered towards
    grid = list(np.floor((np.arange(k) + 0.5) * n_total / k).astype(int))
    if cfg.cover_objects and presence is not None and presence.size:
        pres = np.asarray(presence, dtype=bool).reshape(-1, n_total)
        uncovered = pres.any(axis=1)
        while uncovered.any() and len(chosen) < k:
            gain = pres[uncovered].sum(axis=0).astype(float)
            gain[chosen] = -1
            best = np.flatnonzero(gain == gain.max())
            if cfg.random:
                pick = int(rng.choice(best))
            else:  # among equally good frames, the one nearest a free grid centre keeps the result uniform
                dist = np.min(np.abs(best[:, None] - np.asarray(grid)[None, :]), axis=1)
                pick = int(best[np.argmin(dist)])
                grid.pop(int(np.argmin([abs(g - pick) for g in grid])))
            chosen.append(pick)
            uncovered &= ~pres[:, pick]
    if cfg.random:
        rest = np.setdiff1d(np.arange(n_total), chosen)
        # random fill, stratified so the clip stays covered in time: one draw per free segment
        need = k - len(chosen)
        if need > 0:
            bins = np.array_split(rest, need)
            chosen += [int(rng.choice(b)) for b in bins if len(b)]
    else:
        # grid fill: each forced frame took its nearest centre above; every centre left gets the nearest
        # unused frame, so forced frames bend the grid only locally
        used = set(chosen)
        for g in grid:
            free = np.array([t for t in range(n_total) if t not in used])
            pick = int(free[np.argmin(np.abs(free - g))])
            chosen.append(pick)
            used.add(pick)
    return np.sort(np.asarray(chosen[:k], dtype=np.int64))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One image file -> (H, W, 3) uint8 RGB; DataFormatError naming the file when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DataFormatError(f"cannot read frame {path}: {e}. Check that the file exists and is an image.") from e


def read_frames(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Image files -> (T, H, W, 3) uint8; all frames must have one size."""
    frames = [read_image(p) for p in paths]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise DataFormatError(f"frames of one clip differ in size {sorted(sizes)}: {paths[0]} ...")
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a frame folder in natural (numeric-aware) order."""
    import re

    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"frame folder {folder} does not exist")

    def key(p: Path):
        return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.stem)]

    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=key)


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; DataFormatError with the file and position on bad JSON or a missing file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DataFormatError(f"annotation file {path} does not exist") from e
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e


def empty_masks(t: int, h: int, w: int) -> np.ndarray:
    return np.zeros((0, t, h, w), dtype=bool)


class GroundedDataset:
    """Base of every loader: ``len(ds)``, ``ds[i] -> GroundedSample``, ``ds.name``, ``ds.records()``.

    Subclasses fill ``self._records`` (light per-sample descriptions, no pixels) in ``__init__`` and implement
    ``_load(i, rng)``. Randomness (frame draws, template choice) comes from ``rng``, seeded by
    ``(seed, epoch, i)`` so the same index gives the same sample within an epoch and runs are reproducible.
    Works with ``torch.utils.data.DataLoader`` as a map-style dataset.
    """

    name: str = "dataset"

    def __init__(self, sampling: FrameSampling | None = None, *, name: str | None = None,
                 random_templates: bool = False):
        self.sampling = sampling or FrameSampling()
        self.random_templates = random_templates
        if name is not None:
            self.name = name
        self.epoch = 0
        self._records: list = []

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list:
        """The dataset's samples as light records (ids, phrases, paths), in index order."""
        return list(self._records)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws (frames, templates) for a new pass over the data."""
        self.epoch = int(epoch)

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.sampling.seed, self.epoch, int(i)])

    def __getitem__(self, i: int) -> GroundedSample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.name}: index {i} out of range for {len(self)} samples")
        i = i % len(self)
        sample = self._load(i, self.rng(i))
        n_seg = sample.num_seg()
        if n_seg != sample.masks.shape[0]:  # a loader bug or a broken record; never hand it to training
            raise DataFormatError(f"{sample.source}: {n_seg} [SEG] tokens but {sample.masks.shape[0]} masks")
        return sample

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        raise NotImplementedError

    def template_rng(self, rng: np.random.Generator) -> np.random.Generator | None:
        """The rng for template choice, or None (always the first template) when templates are fixed."""
        return rng if self.random_templates else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, samples={len(self)})"


def probe_num_frames(path: str | os.PathLike) -> int:
    """Frame count of a video file or frame folder (via ``vglamm.io.video``)."""
    from vglamm.io.video import probe_video

    return int(probe_video(path).num_frames)


def read_video_frames(path: str | os.PathLike, indices: Sequence[int]) -> np.ndarray:
    """The frames at ``indices`` (sorted source indices) of a video file or frame folder, (T, H, W, 3) uint8."""
    from vglamm.io.video import iter_video

    got = dict(iter_video(path, indices=[int(i) for i in indices]))
    missing = [int(i) for i in indices if int(i) not in got]
    if missing:
        raise DataFormatError(f"{path}: frames {missing[:5]} could not be decoded (the video is shorter than "
                              f"its header says?)")
    return np.stack([got[int(i)] for i in indices])


def read_index_png(path: str | os.PathLike) -> np.ndarray:
    """An indexed (palette, DAVIS-style) or grayscale PNG -> (H, W) integer label map (palette indices, not colours)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L", "I", "I;16"):
                return np.asarray(im).astype(np.int64)
            if im.mode in ("1",):
                return np.asarray(im).astype(np.int64)
            return np.asarray(im.convert("L")).astype(np.int64)
    except (OSError, ValueError) as e:
        raise DataFormatError(f"cannot read mask {path}: {e}") from e
