"""MeViS protocol (henghuiding/MeViS ``tools/eval_mevis.py``) and the submission zip for the server-scored splits.

Ground truth of an expression = union over its ``anno_id``s of the COCO-RLE masks in ``mask_dict.json``;
J and F are averaged over the frames of each expression, then over expressions; J&F = (J + F) / 2.
An expression with no prediction scores J = F = 0 (the reference does the same for a missing video).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from vglamm.errors import DataFormatError, MaskError
from vglamm.evaluation.vos import boundary_f, region_similarity
from vglamm.io.atomic import atomic_path

Predictions = Callable[[str, str], "np.ndarray | None"] | Mapping


def mevis_ground_truth(video_meta: dict, exp_id: str, mask_dict: Mapping, size: tuple[int, int] | None = None
                       ) -> np.ndarray:
    """(T,H,W) bool ground truth of one expression: union of its ``anno_id`` masks on every frame of the video.

    ``video_meta`` is ``meta_expressions["videos"][video]`` (``frames``, ``expressions``); ``size`` (H,W) is used
    when no object of the expression appears on any frame (taken from the RLEs otherwise).
    """
    try:
        anno_ids = video_meta["expressions"][exp_id]["anno_id"]
        frames = video_meta["frames"]
    except KeyError as e:
        raise DataFormatError(f"MeViS meta entry lacks {e}: expected videos[v] = {{'frames': [...], "
                              "'expressions': {exp_id: {'anno_id': [...]}}}.") from None
    out = None
    for anno_id in anno_ids:
        try:
            rles = mask_dict[str(anno_id)]
        except KeyError:
            raise DataFormatError(f"anno_id {anno_id} is missing from mask_dict.json: check that the meta and "
                                  "mask files come from the same split.") from None
        if len(rles) < len(frames):
            raise DataFormatError(f"anno_id {anno_id} has {len(rles)} masks for {len(frames)} frames.")
        for t in range(len(frames)):
            rle = rles[t]
            if not rle:
                continue
            if out is None:
                h, w = rle["size"]
                out = np.zeros((len(frames), h, w), bool)
            out[t] |= mask_utils.decode(_rle_for_decode(rle)).astype(bool)
    if out is None:
        if size is None:
            raise DataFormatError(f"expression {exp_id}: no object appears on any frame; pass size=(H, W).")
        out = np.zeros((len(frames), *size), bool)
    return out


def _rle_for_decode(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def evaluate_mevis(meta_expressions: Mapping, mask_dict: Mapping, predictions: Predictions, *,
                   progress: bool = False) -> dict:
    """J, F, J&F of MeViS-style predictions.

    ``meta_expressions``: the parsed ``meta_expressions.json`` (with or without its top-level ``"videos"``).
    ``mask_dict``: the parsed ``mask_dict.json``. ``predictions``: a mapping ``{(video, exp_id): (T,H,W) bool}`` or
    a callable ``(video, exp_id) -> (T,H,W) bool | None`` (e.g. :func:`read_prediction_folder`); ``None`` or a
    missing key scores 0. Returns ``{"J", "F", "J&F", "num_expressions", "num_missing", "per_expression"}``.
    """
    videos = meta_expressions.get("videos", meta_expressions)
    get = predictions if callable(predictions) else (lambda v, e: predictions.get((v, e)))
    items = [(v, e) for v, meta in videos.items() for e in meta["expressions"]]
    if progress:
        from tqdm import tqdm
        items = tqdm(items, desc="MeViS", unit="exp")
    per_exp, missing = {}, 0
    for video, exp_id in items:
        pred = get(video, exp_id)
        if pred is None:
            per_exp[f"{video}_{exp_id}"] = {"J": 0.0, "F": 0.0, "missing": True}
            missing += 1
            continue
        pred = np.asarray(pred) > 0
        gt = mevis_ground_truth(videos[video], exp_id, mask_dict, size=pred.shape[1:])
        if pred.shape != gt.shape:
            raise MaskError(f"{video}/{exp_id}: prediction {pred.shape} does not match ground truth {gt.shape}; "
                            "give one mask per listed frame at the video's size.")
        per_exp[f"{video}_{exp_id}"] = {"J": float(region_similarity(gt, pred).mean()),
                                        "F": float(boundary_f(gt, pred).mean())}
    j = float(np.mean([r["J"] for r in per_exp.values()])) if per_exp else float("nan")
    f = float(np.mean([r["F"] for r in per_exp.values()])) if per_exp else float("nan")
    return {"J": j, "F": f, "J&F": (j + f) / 2, "num_expressions": len(per_exp), "num_missing": missing,
            "per_expression": per_exp}


def read_prediction_folder(root: str | os.PathLike, meta_expressions: Mapping) -> Callable:
    """Predictions laid out as the MeViS server expects: ``root/<video>/<exp_id>/<frame>.png`` (0/255 PNG).

    Returns a callable for :func:`evaluate_mevis`; an expression folder that is absent gives ``None``.
    A missing or unreadable frame in a present folder is a :class:`MaskError`.
    """
    root = Path(root)
    videos = meta_expressions.get("videos", meta_expressions)

    def get(video: str, exp_id: str):
        folder = root / video / str(exp_id)
        if not folder.is_dir():
            return None
        masks = []
        for name in videos[video]["frames"]:
            path = folder / f"{name}.png"
            m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise MaskError(f"missing or unreadable prediction {path}: write one PNG per listed frame.")
            masks.append(m > 0)
        return np.stack(masks)

    return get


def write_mevis_submission(predictions: Iterable, zip_path: str | os.PathLike, *, root_name: str = "") -> Path:
    """Write the server submission zip: ``[root_name/]<video>/<exp_id>/<frame>.png`` (0/255 PNG).

    ``predictions`` yields ``(video, exp_id, frame_names, masks (T,H,W) bool)``. Written atomically.
    """
    zip_path = Path(zip_path)
    prefix = f"{root_name.strip('/')}/" if root_name else ""
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for video, exp_id, frame_names, masks in predictions:
                masks = np.asarray(masks)
                if masks.ndim != 3 or len(frame_names) != masks.shape[0]:
                    raise MaskError(f"{video}/{exp_id}: {len(frame_names)} frame names for masks {masks.shape}.")
                for name, m in zip(frame_names, masks):
                    ok, buf = cv2.imencode(".png", (m > 0).astype(np.uint8) * 255)
                    if not ok:
                        raise MaskError(f"could not encode the mask of {video}/{exp_id}/{name} as PNG.")
                    zf.writestr(f"{prefix}{video}/{exp_id}/{name}.png", buf.tobytes())
    return zip_path
