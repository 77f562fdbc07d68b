"""The annotation input layout (documented in README.md): one JSON object per line, one line per video."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vglamm.errors import DataFormatError, MaskError

STREAMS = ("masks", "boxes-captions", "boxes-expressions")
_ID = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class ObjectInput:
    """One annotated object; ``masks`` / ``boxes`` map a source frame index to a COCO RLE / [x0, y0, x1, y1]."""

    id: int
    category: str | None = None
    masks: dict[int, dict] = field(default_factory=dict)
    boxes: dict[int, list[float]] = field(default_factory=dict)

    def masks_at(self, frame_indices, hw: tuple[int, int]) -> np.ndarray:
        """(T,H,W) bool at the given source frames (empty where no mask is given)."""
        from vglamm.io.masks import decode_rle

        out = np.zeros((len(frame_indices), *hw), dtype=bool)
        for k, f in enumerate(frame_indices):
            rle = self.masks.get(int(f))
            if rle is not None:
                m = decode_rle(rle)
                if m.shape != tuple(hw):
                    raise MaskError(f"object {self.id}: mask of frame {f} is {m.shape[1]}x{m.shape[0]}, the video "
                                    f"is {hw[1]}x{hw[0]}")
                out[k] = m
        return out

    def boxes_at(self, frame_indices) -> np.ndarray:
        """(T,4) float at the given source frames, NaN where no box is given."""
        out = np.full((len(frame_indices), 4), np.nan)
        for k, f in enumerate(frame_indices):
            if int(f) in self.boxes:
                out[k] = self.boxes[int(f)]
        return out


@dataclass
class ItemInput:
    id: str
    video: Path
    objects: list[ObjectInput]
    caption: str | None = None
    expressions: list[tuple[tuple[int, ...], str]] = field(default_factory=list)

    def object(self, oid: int) -> ObjectInput:
        return next(o for o in self.objects if o.id == oid)


def _per_frame(value, where: str, kind: str) -> dict[int, object]:
    """A list (index = source frame, null = absent) or a ``{"frame": value}`` dict -> ``{frame: value}``."""
    if isinstance(value, list):
        return {k: v for k, v in enumerate(value) if v is not None}
    if isinstance(value, dict):
        try:
            return {int(k): v for k, v in value.items() if v is not None}
        except ValueError:
            raise DataFormatError(f"{where}: {kind} keys must be frame indices") from None
    raise DataFormatError(f"{where}: {kind} must be a list (one entry per frame) or a {{frame: value}} object")


def _object(doc, where: str, stream: str) -> ObjectInput:
    if not isinstance(doc, dict) or "id" not in doc:
        raise DataFormatError(f"{where}: each object needs an integer 'id'")
    try:
        oid = int(doc["id"])
    except (TypeError, ValueError):
        raise DataFormatError(f"{where}: object id {doc['id']!r} is not an integer") from None
    where = f"{where} object {oid}"
    obj = ObjectInput(oid, doc.get("category"))
    if stream == "masks":
        if "masks" not in doc:
            raise DataFormatError(f"{where}: the 'masks' stream needs per-frame 'masks' (COCO RLE)")
        obj.masks = _per_frame(doc["masks"], where, "masks")
        for f, rle in obj.masks.items():
            if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
                raise DataFormatError(f"{where}: frame {f}: a mask must be a COCO RLE {{'size', 'counts'}}")
    else:
        if "boxes" not in doc:
            raise DataFormatError(f"{where}: the '{stream}' stream needs per-frame 'boxes' [x0, y0, x1, y1]")
        for f, box in _per_frame(doc["boxes"], where, "boxes").items():
            if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                raise DataFormatError(f"{where}: frame {f}: a box must be [x0, y0, x1, y1] in pixels, got {box!r}")
            if box[2] <= box[0] or box[3] <= box[1]:
                raise DataFormatError(f"{where}: frame {f}: box {box} has x1 <= x0 or y1 <= y0")
            obj.boxes[f] = [float(v) for v in box]
    return obj


def parse_item(doc, stream: str, base: Path, where: str) -> ItemInput:
    """Validate one input record for ``stream``; relative video paths are relative to ``base``."""
    if stream not in STREAMS:
        raise DataFormatError(f"unknown stream {stream!r}; choose one of {', '.join(STREAMS)}")
    if not isinstance(doc, dict):
        raise DataFormatError(f"{where}: expected a JSON object")
    for key in ("id", "video", "objects"):
        if key not in doc:
            raise DataFormatError(f"{where}: missing '{key}'")
    iid = str(doc["id"])
    if not _ID.fullmatch(iid):
        raise DataFormatError(f"{where}: id {iid!r} may only use letters, digits, '_', '.', '-' (it names files)")
    where = f"{where} (id {iid})"
    if not isinstance(doc["objects"], list) or not doc["objects"]:
        raise DataFormatError(f"{where}: 'objects' must be a non-empty list")
    objects = [_object(o, where, stream) for o in doc["objects"]]
    ids = [o.id for o in objects]
    if len(set(ids)) != len(ids):
        raise DataFormatError(f"{where}: duplicate object ids {ids}")
    video = Path(doc["video"])
    item = ItemInput(iid, video if video.is_absolute() else base / video, objects)
    if stream == "boxes-captions":
        if not isinstance(doc.get("caption"), str) or not doc["caption"].strip():
            raise DataFormatError(f"{where}: the 'boxes-captions' stream needs a non-empty 'caption'")
        item.caption = doc["caption"]
    if stream == "boxes-expressions":
        exprs = doc.get("expressions")
        if not isinstance(exprs, list) or not exprs:
            raise DataFormatError(f"{where}: the 'boxes-expressions' stream needs 'expressions': "
                                  "[{\"text\": ..., \"obj_ids\": [...]}]")
        for e in exprs:
            if not isinstance(e, dict) or not isinstance(e.get("text"), str) or not isinstance(e.get("obj_ids"), list):
                raise DataFormatError(f"{where}: an expression must be {{\"text\": str, \"obj_ids\": [int, ...]}}")
            unknown = [o for o in e["obj_ids"] if o not in ids]
            if unknown or not e["obj_ids"]:
                raise DataFormatError(f"{where}: expression {e['text']!r} refers to unknown object ids {unknown}")
            item.expressions.append((tuple(int(o) for o in e["obj_ids"]), e["text"]))
    return item


def read_items(path: str | Path, stream: str) -> list[ItemInput]:
    """Read and validate a JSONL (one record per line) or JSON (a list of records) input file."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise DataFormatError(f"cannot read the annotation input {path}: {e}") from e
    docs: list[tuple[str, object]] = []
    if text.lstrip().startswith("["):
        try:
            docs = [(f"{path}[{k}]", d) for k, d in enumerate(json.loads(text))]
        except ValueError as e:
            raise DataFormatError(f"{path}: not valid JSON: {e}") from e
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    docs.append((f"{path}:{n}", json.loads(line)))
                except ValueError as e:
                    raise DataFormatError(f"{path}:{n}: not valid JSON: {e}") from e
    items = [parse_item(d, stream, path.parent, where) for where, d in docs]
    seen = set()
    for it in items:
        if it.id in seen:
            raise DataFormatError(f"{path}: duplicate item id {it.id!r}")
        seen.add(it.id)
    return items
