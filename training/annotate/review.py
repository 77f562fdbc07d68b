"""Human review: overlay videos + captions to look at, ``accepted.json`` to edit, and the final GCG file.

``OUT/review/accepted.json`` maps each item id to ``"pending"``, ``"accepted"`` or ``"rejected"`` (``true`` /
``false`` are read as accepted / rejected). A new export adds new items as pending and keeps existing decisions.
Only accepted items go into the GCG file written by :func:`finalize`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from vglamm.errors import ConfigError, DataFormatError
from vglamm.io.atomic import write_text_atomic

DECISIONS = ("pending", "accepted", "rejected")


def review_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "review"


def item_ids(out_dir: str | Path) -> list[str]:
    return sorted(p.stem for p in (Path(out_dir) / "items").glob("*.json"))


def load_item(out_dir: str | Path, item_id: str) -> dict:
    path = Path(out_dir) / "items" / f"{item_id}.json"
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise DataFormatError(f"no annotated item {item_id!r} in {out_dir} (looked for {path})") from None
    except ValueError as e:
        raise DataFormatError(f"{path} is not valid JSON: {e}") from e


def item_masks(item: dict) -> dict[int, np.ndarray]:
    from vglamm.io.masks import rles_to_masks

    size = (item["height"], item["width"])
    return {int(o): rles_to_masks(v["segmentations"], size) for o, v in item["objects"].items()}


def read_decisions(out_dir: str | Path) -> dict[str, str]:
    path = review_dir(out_dir) / "accepted.json"
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text("utf-8"))
    except ValueError as e:
        raise DataFormatError(f"{path} is not valid JSON ({e}); fix the edit or delete the file and re-export") from e
    if not isinstance(raw, dict):
        raise DataFormatError(f"{path} must map item ids to \"accepted\" / \"rejected\" / \"pending\"")
    out = {}
    for k, v in raw.items():
        v = {True: "accepted", False: "rejected"}.get(v, v) if isinstance(v, bool) else v
        if v not in DECISIONS:
            raise DataFormatError(f"{path}: item {k!r} has decision {v!r}; use one of {', '.join(DECISIONS)}")
        out[str(k)] = v
    return out


def _write_decisions(out_dir: str | Path, decisions: dict[str, str]) -> None:
    write_text_atomic(review_dir(out_dir) / "accepted.json", json.dumps(dict(sorted(decisions.items())), indent=1))


def export_review(out_dir: str | Path, *, fps: float = 4.0, videos: bool = True) -> Path:
    """Write ``review/<id>.mp4`` (masks over the frames, one colour per phrase), ``review/<id>.txt`` (caption,
    phrases, intermediate answers) for every item, and merge new items into ``accepted.json`` as pending."""
    from training.data.base import read_frames
    from vglamm.io.overlay import write_overlay_video

    out_dir = Path(out_dir)
    rdir = review_dir(out_dir)
    decisions = read_decisions(out_dir)
    for iid in item_ids(out_dir):
        item = load_item(out_dir, iid)
        if videos and not (rdir / f"{iid}.mp4").exists():
            frames = read_frames([out_dir / f for f in item["file_names"]])
            masks = item_masks(item)
            objects = []
            for p in item["phrases"]:
                union = np.zeros_like(next(iter(masks.values())))
                for o in p["obj_ids"]:
                    union |= masks[o]
                objects.append((f"{p['text']} ({', '.join(map(str, p['obj_ids']))})", union))
            write_overlay_video(rdir / f"{iid}.mp4", frames, objects, fps=fps)
        lines = [f"item {iid} ({item['stream']}, {item['video']})", "", item["answer"], "", "phrases:"]
        lines += [f"  {p['text']!r} -> objects {p['obj_ids']}" for p in item["phrases"]]
        lines += ["", "model notes:", json.dumps(item.get("notes", {}), indent=1)]
        write_text_atomic(rdir / f"{iid}.txt", "\n".join(lines) + "\n")
        decisions.setdefault(iid, "pending")
    _write_decisions(out_dir, decisions)
    return rdir


def set_decision(out_dir: str | Path, ids: Iterable[str], decision: str, *, all_items: bool = False) -> dict[str, str]:
    """Mark items accepted / rejected / pending (``all_items``: every produced item); returns all decisions."""
    if decision not in DECISIONS:
        raise ConfigError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    known = set(item_ids(out_dir))
    ids = sorted(known) if all_items else list(ids)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ConfigError(f"no annotated items {unknown} in {out_dir}")
    decisions = read_decisions(out_dir)
    decisions.update({i: decision for i in ids})
    _write_decisions(out_dir, decisions)
    return decisions


def finalize(out_dir: str | Path, gcg_path: str | Path, *, include_pending: bool = False) -> tuple[Path, list[str]]:
    """Write the accepted items as one video GCG JSON (via ``training.data.video_gcg``); returns (path, item ids).

    Frame paths in the file are relative to its folder, so ``VideoGCGDataset(gcg_path)`` finds them.
    """
    from training.data.video_gcg import gcg_clip, write_video_gcg

    out_dir, gcg_path = Path(out_dir), Path(gcg_path)
    decisions = read_decisions(out_dir)
    wanted = {"accepted", "pending"} if include_pending else {"accepted"}
    ids = [i for i in item_ids(out_dir) if decisions.get(i, "pending") in wanted]
    if not ids:
        raise DataFormatError(f"no accepted items in {out_dir}: run the review export and accept items first "
                              f"(vglamm annotate accept {out_dir} --all)")
    videos, anns = [], []
    next_ann = 1
    for vid, iid in enumerate(ids, 1):
        item = load_item(out_dir, iid)
        names = [os.path.relpath(os.path.abspath(out_dir / f), os.path.abspath(gcg_path.parent))
                 for f in item["file_names"]]
        video, clip_anns = gcg_clip(vid, names, item["caption"], item_masks(item), first_annotation_id=next_ann,
                                    dataset_split=f"annotate:{item['stream']}")
        next_ann += len(clip_anns)
        videos.append(video)
        anns.extend(clip_anns)
    info = {"description": "video GCG from vglamm's annotation pipeline", "item_ids": {str(v): i for v, i in
                                                                                       enumerate(ids, 1)}}
    write_video_gcg(gcg_path, videos, anns, info=info)
    return gcg_path, ids
