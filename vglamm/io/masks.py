"""Mask formats: COCO RLE (per frame and as JSON files), DAVIS palette PNG folders, binary 0/255 PNG folders.

One object over a video is a ``(T, H, W)`` bool array; several objects are a dict ``{obj_id: (T, H, W)}`` or an
``(N, T, H, W)`` bool array (ids 1..N).

RLE JSON layout written by ``save_rle_json`` (close to YouTube-VIS / MeViS ``mask_dict.json``)::

    {"video": "name or null", "size": [h, w], "num_frames": T, "frame_names": [...] or null,
     "objects": [{"id": 1, "phrase": "the red car" or null,
                  "segmentations": [{"size": [h, w], "counts": "..."} or null, ... one per frame]}]}

``null`` marks a frame where the object is absent (empty mask).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from vglamm.errors import DataFormatError, MaskError
from vglamm.io.atomic import atomic_path, write_text_atomic

PathLike = str | os.PathLike
VOID = 255


# ------------------------------------------------------------------------------------------------------- validation

def _check_masks(masks, what: str = "masks", ndim: int = 3, size: tuple[int, int] | None = None) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.dtype != np.bool_:
        raise MaskError(f"{what} must be bool, got {masks.dtype}. Convert with `masks > 0` (or `> 0.5` for "
                        "probabilities).")
    if masks.ndim != ndim:
        shape = {2: "(H, W)", 3: "(T, H, W)", 4: "(N, T, H, W)"}[ndim]
        raise MaskError(f"{what} must be {shape}, got shape {masks.shape}.")
    if size is not None and tuple(masks.shape[-2:]) != tuple(size):
        raise MaskError(f"{what} are {masks.shape[-2]}x{masks.shape[-1]} (HxW) but the video is "
                        f"{size[0]}x{size[1]}. Resize the masks to the video (nearest neighbour).")
    return masks


def as_objects(objects) -> dict[int, np.ndarray]:
    """Normalise objects to ``{id: (T, H, W) bool}``: accepts a dict, an (N, T, H, W) array (ids 1..N) or a
    single (T, H, W) array (id 1)."""
    if isinstance(objects, Mapping):
        out = {int(k): _check_masks(v, f"masks of object {k}") for k, v in objects.items()}
    else:
        arr = np.asarray(objects)
        if arr.ndim == 3:
            arr = arr[None]
        arr = _check_masks(arr, "objects", ndim=4)
        out = {i + 1: m for i, m in enumerate(arr)}
    shapes = {m.shape for m in out.values()}
    if len(shapes) > 1:
        raise MaskError(f"objects have different (T, H, W) shapes: {sorted(shapes)}. All must cover the same frames.")
    return out


# ------------------------------------------------------------------------------------------------------------- RLE

def encode_rle(mask2d) -> dict:
    """COCO RLE of one (H, W) bool mask: ``{"size": [h, w], "counts": str}`` (JSON-ready)."""
    m = _check_masks(mask2d, "mask", ndim=2)
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Mapping) -> np.ndarray:
    """(H, W) bool mask from a COCO RLE; ``counts`` may be a str, bytes, or an uncompressed list of run lengths."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, list):
            compressed = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        with warnings.catch_warnings():
            # pycocotools' Cython decoder trips a NumPy 2 DeprecationWarning on every call; the result is correct.
            warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
            return mask_utils.decode(compressed).astype(bool)
    except (KeyError, TypeError, ValueError) as e:
        raise MaskError(f"not a valid COCO RLE ({e!r}); expected {{'size': [h, w], 'counts': str | bytes | list}}.") from e


def masks_to_rles(masks) -> list[dict | None]:
    """One RLE per frame of a (T, H, W) bool array; ``None`` where the frame is empty."""
    masks = _check_masks(masks)
    return [encode_rle(m) if m.any() else None for m in masks]


def rles_to_masks(rles: Sequence[Mapping | None], size: tuple[int, int]) -> np.ndarray:
    """(T, H, W) bool from per-frame RLEs (``None`` = empty frame); every RLE must have ``size`` (h, w)."""
    h, w = int(size[0]), int(size[1])
    out = np.zeros((len(rles), h, w), dtype=bool)
    for t, rle in enumerate(rles):
        if rle is None:
            continue
        if [int(v) for v in rle.get("size", ())] != [h, w]:
            raise MaskError(f"RLE of frame {t} has size {rle.get('size')} but the video is {[h, w]}.")
        out[t] = decode_rle(rle)
    return out


def save_rle_json(path: PathLike, objects, *, phrases: Mapping[int, str] | Sequence[str] | None = None,
                  video: str | None = None, frame_names: Sequence[str] | None = None,
                  size: tuple[int, int] | None = None) -> Path:
    """Write objects (see ``as_objects``) as an RLE JSON file in the layout of this module's docstring.

    ``phrases`` maps ids (or, as a list, objects in order) to their phrase; ``size`` (H, W) checks the masks.
    """
    objs = as_objects(objects)
    if not objs:
        raise MaskError("no objects to save; pass at least one (T, H, W) mask.")
    t, h, w = next(iter(objs.values())).shape
    if size is not None:
        _check_masks(next(iter(objs.values())), size=size)
    if frame_names is not None and len(frame_names) != t:
        raise MaskError(f"{len(frame_names)} frame names for {t} frames.")
    if phrases is not None and not isinstance(phrases, Mapping):
        phrases = dict(zip(objs, phrases))
    doc = {"video": video, "size": [h, w], "num_frames": t,
           "frame_names": list(frame_names) if frame_names is not None else None,
           "objects": [{"id": k, "phrase": (phrases or {}).get(k), "segmentations": masks_to_rles(m)}
                       for k, m in objs.items()]}
    write_text_atomic(path, json.dumps(doc))
    return Path(path)


def load_rle_json(path: PathLike) -> dict:
    """Read an RLE JSON file: ``{"video", "size", "frame_names", "objects": [{"id", "phrase", "masks" (T,H,W)}]}``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        h, w = doc["size"]
        objects = [{"id": int(o["id"]), "phrase": o.get("phrase"),
                    "masks": rles_to_masks(o["segmentations"], (h, w))} for o in doc["objects"]]
    except FileNotFoundError as e:
        raise MaskError(f"mask file {path} does not exist.") from e
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, MaskError):
            raise
        raise DataFormatError(f"{path} is not an RLE mask JSON ({e!r}); expected the layout documented in "
                              "vglamm.io.masks.") from e
    lengths = {len(o["masks"]) for o in objects}
    if len(lengths) > 1:
        raise DataFormatError(f"{path}: objects have different frame counts {sorted(lengths)}.")
    return {"video": doc.get("video"), "size": (h, w), "frame_names": doc.get("frame_names"), "objects": objects}


# ------------------------------------------------------------------------------------------------------------- PNGs

def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map, (256, 3) uint8: index i gets the bits of i spread over R, G, B."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, rgb = i, [0, 0, 0]
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - bit)
            c >>= 3
        palette[i] = rgb
    return palette


def _png_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise MaskError(f"mask folder {folder} does not exist.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not files:
        raise MaskError(f"mask folder {folder} holds no .png files.")
    return files


def _read_png(path: Path, modes: tuple[str, ...]) -> tuple[np.ndarray, str]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in modes:
                raise MaskError(f"{path} is a {im.mode!r} PNG; expected mode {' or '.join(modes)}.")
            return np.array(im), im.mode
    except MaskError:
        raise
    except OSError as e:
        raise MaskError(f"{path} cannot be read as a PNG ({e}). Replace the file.") from e


def _stack(arrays: list[np.ndarray], files: list[Path]) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise MaskError(f"PNGs in {files[0].parent} have different sizes {sorted(shapes)}.")
    return np.stack(arrays)


def _frame_names(n: int, frame_names: Sequence[str] | None) -> list[str]:
    if frame_names is None:
        return [f"{t:05d}" for t in range(n)]
    if len(frame_names) != n:
        raise MaskError(f"{len(frame_names)} frame names for {n} frames.")
    return [Path(str(name)).stem for name in frame_names]


def _write_png(path: Path, image) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def objects_to_labels(objects) -> np.ndarray:
    """Merge objects into (T, H, W) uint8 labels (0 background). Where objects overlap the higher id wins."""
    objs = as_objects(objects)
    if not objs:
        raise MaskError("no objects to merge.")
    bad = [k for k in objs if not 1 <= k <= 254]
    if bad:
        raise MaskError(f"object ids must be in 1..254 for label maps (255 is void), got {bad}.")
    labels = np.zeros(next(iter(objs.values())).shape, dtype=np.uint8)
    for k in sorted(objs):
        labels[objs[k]] = k
    return labels


def labels_to_objects(labels, ids: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """Split (T, H, W) labels into ``{id: (T, H, W) bool}`` for ids present (0 and void 255 excluded) or ``ids``."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise MaskError(f"labels must be a (T, H, W) integer array, got {labels.dtype} {labels.shape}.")
    if ids is None:
        ids = [int(v) for v in np.unique(labels) if v not in (0, VOID)]
    return {int(k): labels == k for k in ids}


def save_davis_pngs(directory: PathLike, labels_or_objects, frame_names: Sequence[str] | None = None) -> list[Path]:
    """Write one indexed-palette PNG per frame (DAVIS layout: ids 1..N, 0 background, 255 void).

    Accepts (T, H, W) uint8 labels, or objects (dict / (N, T, H, W) bool, merged by ``objects_to_labels``).
    Files are named ``frame_names`` (default 00000.png, 00001.png, ...), each written atomically.
    """
    from PIL import Image

    arr = labels_or_objects
    if isinstance(arr, Mapping) or np.asarray(arr).dtype == np.bool_:
        labels = objects_to_labels(arr)
    else:
        labels = np.asarray(arr)
        if labels.dtype != np.uint8 or labels.ndim != 3:
            raise MaskError(f"labels must be (T, H, W) uint8, got {labels.dtype} {labels.shape}; "
                            "or pass bool objects.")
    directory = Path(directory)
    palette = davis_palette().ravel().tolist()
    paths = []
    for name, lab in zip(_frame_names(len(labels), frame_names), labels):
        im = Image.fromarray(lab, mode="P")
        im.putpalette(palette)
        paths.append(directory / f"{name}.png")
        _write_png(paths[-1], im)
    return paths


def load_davis_pngs(directory: PathLike, *, return_names: bool = False):
    """(T, H, W) uint8 labels from a folder of indexed PNGs (sorted by name); with ``return_names`` also the
    frame names (stems). Single-channel ('L') PNGs are read as labels too."""
    files = _png_files(Path(directory))
    labels = _stack([_read_png(f, ("P", "L"))[0] for f in files], files).astype(np.uint8)
    return (labels, [f.stem for f in files]) if return_names else labels


def save_binary_pngs(directory: PathLike, masks, frame_names: Sequence[str] | None = None) -> list[Path]:
    """Write a (T, H, W) bool mask as one 0/255 grayscale PNG per frame (each file atomic)."""
    from PIL import Image

    masks = _check_masks(masks)
    directory = Path(directory)
    paths = []
    for name, m in zip(_frame_names(len(masks), frame_names), masks):
        paths.append(directory / f"{name}.png")
        _write_png(paths[-1], Image.fromarray(m.astype(np.uint8) * 255, mode="L"))
    return paths


def load_binary_pngs(directory: PathLike, *, return_names: bool = False):
    """(T, H, W) bool from a folder of 0/255 PNGs (sorted by name; a pixel is set when > 127).

    Reads DAVIS 2016 annotations and MeViS / Ref-YouTube-VOS submissions; palette PNGs count any non-zero index.
    """
    files = _png_files(Path(directory))
    arrays = []
    for f in files:
        a, mode = _read_png(f, ("L", "1", "P", "RGB", "RGBA", "LA"))
        if a.ndim == 3:
            a = a[..., 0]
        # Palette PNGs hold object indices (any object counts); "1" images decode to bools already.
        arrays.append(a > 0 if mode in ("P", "1") else a > 127)
    masks = _stack(arrays, files)
    return (masks, [f.stem for f in files]) if return_names else masks


def save_submission_pngs(root: PathLike, video: str, exp_id: str | int, masks,
                         frame_names: Sequence[str] | None = None) -> list[Path]:
    """MeViS / Ref-YouTube-VOS submission layout: ``<root>/<video>/<exp_id>/<frame>.png`` (0/255)."""
    return save_binary_pngs(Path(root) / str(video) / str(exp_id), masks, frame_names)


def load_submission_pngs(root: PathLike, video: str, exp_id: str | int, *, return_names: bool = False):
    """Read one expression's masks from the submission layout (see ``save_submission_pngs``)."""
    return load_binary_pngs(Path(root) / str(video) / str(exp_id), return_names=return_names)


def __getattr__(name: str):
    # The overlay writer lives in vglamm.io.overlay (it needs OpenCV and the video writer); reachable from here too.
    if name in ("write_overlay_video", "draw_overlay"):
        from vglamm.io import overlay

        return getattr(overlay, name)
    raise AttributeError(f"module 'vglamm.io.masks' has no attribute {name!r}")
