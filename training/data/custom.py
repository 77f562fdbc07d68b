"""The custom grounded-data format (JSONL) for users' own data: validator and loader. See training/data/README.md.

One record per line::

    {"video": "clips/cat.mp4",                      # video file or frame folder, relative to the JSONL file
     "conversation": [{"role": "user", "content": "What is the cat doing?"},
                      {"role": "assistant", "content": "<p> The cat </p> [SEG] jumps onto <p> the sofa </p> [SEG]."}],
     "masks": [{"rle_json": "masks/cat.json"},       # per [SEG], in order: a JSON list of COCO RLE | null per frame,
               {"png_dir": "masks/sofa/"}],          #   a folder of one PNG per frame (non-zero = object),
                                                     #   or inline {"rles": [RLE | null, ...]}
     "frames": [0, 10, 20]}                          # optional: the source frames to use
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vglamm.errors import DataFormatError, VglammError
from vglamm.sample import SEG_TOKEN, GroundedSample

from ._rle import decode_rle, rle_area
from .base import (FrameSampling, GroundedDataset, list_frame_files, load_json, read_index_png, read_video_frames,
                   select_frames)

ROLES = ("user", "assistant")
MASK_KINDS = ("rle_json", "png_dir", "rles")


@dataclass
class RecordError:
    line: int  # 1-based line number in the JSONL file
    field: str  # "json", "video", "conversation", "masks", "frames"
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass
class ValidationReport:
    """Every problem found in a custom JSONL file; ``ok`` when there are none."""

    path: str
    num_records: int = 0
    errors: list[RecordError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def bad_lines(self) -> list[int]:
        return sorted({e.line for e in self.errors})

    @property
    def num_valid(self) -> int:
        return self.num_records - len(self.bad_lines)

    def summary(self, max_errors: int = 50) -> str:
        """Human-readable report for the CLI: counts, then one line per error (the first ``max_errors``)."""
        head = f"{self.path}: {self.num_records} records, {self.num_valid} valid, {len(self.bad_lines)} with errors"
        if self.ok:
            return head + " - OK"
        lines = [head] + [f"  {e}" for e in self.errors[:max_errors]]
        if len(self.errors) > max_errors:
            lines.append(f"  ... and {len(self.errors) - max_errors} more errors")
        return "\n".join(lines)


@dataclass
class _VideoInfo:
    num_frames: int
    size: tuple[int, int]


class _Track:
    """One object's masks over the video's frames: per frame a COCO RLE / None, or a PNG path."""

    def __init__(self, items: list, kind: str):
        self.items, self.kind = items, kind

    def __len__(self) -> int:
        return len(self.items)

    def sizes(self) -> set[tuple[int, int]]:
        """(H, W) of each frame's mask, without decoding RLEs (PNG headers only)."""
        from PIL import Image

        out = set()
        for it in self.items:
            if it is None:
                continue
            if self.kind == "png":
                with Image.open(it) as im:
                    out.add((im.height, im.width))
            else:
                out.add((int(it["size"][0]), int(it["size"][1])))
        return out

    def present(self, t: int) -> bool:
        it = self.items[t]
        if it is None:
            return False
        return bool(read_index_png(it).any()) if self.kind == "png" else rle_area(it) > 0

    def mask(self, t: int, hw: tuple[int, int]) -> np.ndarray:
        it = self.items[t]
        if it is None:
            return np.zeros(hw, bool)
        return read_index_png(it) > 0 if self.kind == "png" else decode_rle(it)


def _check_rle(r: Any) -> bool:
    return r is None or (isinstance(r, dict) and isinstance(r.get("size"), list) and len(r["size"]) == 2
                         and isinstance(r.get("counts"), (str, list)))


def _load_track(entry: Any, base: Path) -> _Track:
    """A ``masks`` entry -> _Track; raises DataFormatError with what is wrong."""
    if not isinstance(entry, dict) or len([k for k in MASK_KINDS if k in entry]) != 1:
        raise DataFormatError(f"each mask must be an object with exactly one of {', '.join(MASK_KINDS)}, got {entry!r:.80}")
    if "png_dir" in entry:
        folder = base / str(entry["png_dir"])
        if not folder.is_dir():
            raise DataFormatError(f"png_dir {folder} does not exist")
        return _Track(list_frame_files(folder), "png")
    if "rle_json" in entry:
        p = base / str(entry["rle_json"])
        if not p.exists():
            raise DataFormatError(f"rle_json {p} does not exist")
        rles = load_json(p)
    else:
        rles = entry["rles"]
    if not isinstance(rles, list) or not all(_check_rle(r) for r in rles):
        raise DataFormatError("RLE masks must be a list with a COCO RLE {size: [h, w], counts} or null per frame")
    return _Track(rles, "rle")


def _probe(path: Path, cache: dict) -> _VideoInfo:
    if path not in cache:
        from vglamm.io.video import probe_video

        info = probe_video(path)
        cache[path] = _VideoInfo(int(info.num_frames), tuple(info.size))
    return cache[path]


def _check_conversation(conv: Any) -> list[str]:
    if not isinstance(conv, list) or not conv:
        return ["must be a non-empty list of {role, content} messages"]
    problems = []
    for k, m in enumerate(conv):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            problems.append(f"message {k} must be an object with a string 'content'")
        elif m.get("role") not in ROLES:
            problems.append(f"message {k} has role {m.get('role')!r}; roles are 'user' and 'assistant'")
        elif not m["content"].strip():
            problems.append(f"message {k} is empty")
    if not problems:
        if conv[0]["role"] != "user":
            problems.append("the first message must be from the user")
        for k in range(1, len(conv)):
            if conv[k]["role"] == conv[k - 1]["role"]:
                problems.append(f"messages {k - 1} and {k} are both from the {conv[k]['role']}; roles must alternate")
                break
        if not any(m["role"] == "assistant" for m in conv):
            problems.append("there is no assistant answer to train on")
        if any(SEG_TOKEN in m["content"] for m in conv if m["role"] == "user"):
            problems.append(f"{SEG_TOKEN} appears in a user message; only answers hold {SEG_TOKEN}")
    return problems


def _check_record(rec: Any, line: int, base: Path, cache: dict) -> tuple[list[RecordError], dict | None]:
    """All errors of one parsed record, and (when valid) what loading needs."""
    errs: list[RecordError] = []

    def err(fld, msg):
        errs.append(RecordError(line, fld, msg))

    if not isinstance(rec, dict):
        err("json", "the line must be a JSON object")
        return errs, None
    info = None
    video = rec.get("video")
    if not isinstance(video, str) or not video:
        err("video", "missing 'video' (a video file or frame folder, relative to the JSONL file)")
    else:
        vpath = base / video
        if not vpath.exists():
            err("video", f"{vpath} does not exist")
        else:
            try:
                info = _probe(vpath, cache)
            except VglammError as e:
                err("video", f"{vpath} cannot be read: {e}")
    for p in _check_conversation(rec.get("conversation")):
        err("conversation", p)
    n_seg = sum(m["content"].count(SEG_TOKEN) for m in rec.get("conversation") or []
                if isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), str))
    masks = rec.get("masks", [])
    tracks: list[_Track] = []
    if not isinstance(masks, list):
        err("masks", "'masks' must be a list, one entry per [SEG]")
        masks = []
    if len(masks) != n_seg:
        err("masks", f"{n_seg} {SEG_TOKEN} in the answers but {len(masks)} masks; give one mask per {SEG_TOKEN}")
    frames = rec.get("frames")
    if frames is not None:
        if not isinstance(frames, list) or not frames or not all(isinstance(t, int) and not isinstance(t, bool)
                                                                 for t in frames):
            err("frames", "'frames' must be a non-empty list of frame indices")
            frames = None
        elif info is not None and not all(0 <= t < info.num_frames for t in frames):
            err("frames", f"indices must be in [0, {info.num_frames}) for this {info.num_frames}-frame video")
            frames = None
        elif len(set(frames)) != len(frames):
            err("frames", "indices repeat")
            frames = None
    for k, entry in enumerate(masks):
        try:
            track = _load_track(entry, base)
        except DataFormatError as e:
            err("masks", f"mask {k}: {e}")
            continue
        tracks.append(track)
        if info is None:
            continue
        lengths = {info.num_frames} | ({len(frames)} if frames else set())
        if len(track) not in lengths:
            err("masks", f"mask {k} has {len(track)} frames but the video has {info.num_frames}"
                         + (f" and 'frames' lists {len(frames)}" if frames else ""))
        try:
            sizes = track.sizes()
        except OSError as e:
            err("masks", f"mask {k}: unreadable PNG ({e})")
            continue
        bad = sorted(s for s in sizes if s != info.size)
        if bad:
            err("masks", f"mask {k} is {bad[0][1]}x{bad[0][0]} but the video is {info.size[1]}x{info.size[0]}")
    if errs:
        return errs, None
    return errs, {"video": base / video, "conversation": rec["conversation"], "tracks": tracks, "frames": frames,
                  "num_frames": info.num_frames, "line": line}


def _scan(path: str | os.PathLike) -> tuple[ValidationReport, list[dict]]:
    path = Path(path)
    report = ValidationReport(str(path))
    good: list[dict] = []
    if not path.is_file():
        report.errors.append(RecordError(0, "file", f"{path} does not exist"))
        return report, good
    base = path.parent
    cache: dict = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines (a trailing newline) are not records
            report.num_records += 1
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                report.errors.append(RecordError(line_no, "json", f"invalid JSON at column {e.colno}: {e.msg}"))
                continue
            errs, ok = _check_record(rec, line_no, base, cache)
            report.errors += errs
            if ok is not None:
                good.append(ok)
    if report.num_records == 0:
        report.errors.append(RecordError(0, "file", "the file has no records"))
    return report, good


def validate_custom(path: str | os.PathLike) -> ValidationReport:
    """Check every record of a custom JSONL file and report all problems with their line numbers.

    Checks: JSON syntax, the video exists and decodes, the conversation (non-empty, roles user/assistant,
    alternating, starts with the user), one mask per ``[SEG]``, mask files exist, mask frame count and size match
    the video, ``frames`` indices are in range. Nothing is raised for bad records: read ``report.ok``,
    ``report.errors`` or ``print(report.summary())``.
    """
    return _scan(path)[0]


class CustomDataset(GroundedDataset):
    """Loader of the custom JSONL format. Refuses a file with errors (DataFormatError with the report) unless
    ``skip_invalid=True``, in which case bad records are left out and listed in ``self.report``."""

    name = "custom"

    def __init__(self, path: str | os.PathLike, sampling: FrameSampling | None = None, *, skip_invalid: bool = False,
                 name: str | None = None, random_templates: bool = False):
        super().__init__(sampling, name=name, random_templates=random_templates)
        self.path = Path(path)
        self.report, good = _scan(self.path)
        if not self.report.ok and not (skip_invalid and good):
            raise DataFormatError(self.report.summary(max_errors=20) + "\nFix these records (see "
                                  "training/data/README.md) or pass skip_invalid=True to train on the valid ones.")
        self._records = good

    def _load(self, i: int, rng: np.random.Generator) -> GroundedSample:
        r = self._records[i]
        candidates = np.asarray(r["frames"] if r["frames"] else range(r["num_frames"]))
        order = np.argsort(candidates)
        candidates = candidates[order]
        tracks: list[_Track] = r["tracks"]
        # a mask may cover the whole video or just the listed frames: map candidate -> position in the track
        def pos(track: _Track, k: int) -> int:
            return int(candidates[k]) if len(track) == r["num_frames"] else int(order[k])

        presence = np.array([[t.present(pos(t, k)) for k in range(len(candidates))] for t in tracks], dtype=bool) \
            if tracks else None
        sel = select_frames(len(candidates), self.sampling, presence, rng if self.sampling.random else None)
        idx = candidates[sel]
        frames = read_video_frames(r["video"], idx)
        hw = frames.shape[1:3]
        masks = np.zeros((len(tracks), len(idx)) + hw, dtype=bool)
        for n, t in enumerate(tracks):
            for j, k in enumerate(sel):
                masks[n, j] = t.mask(pos(t, int(k)), hw)
        conversation = [{"role": m["role"], "content": m["content"]} for m in r["conversation"]]
        return GroundedSample(frames, conversation, masks, idx, f"{self.name}:{self.path.name}:{r['line']}",
                              {"line": r["line"], "video": str(r["video"])})
