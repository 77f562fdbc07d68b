"""``edit_video``: ground a target, condition its masks, edit, composite, write. One function, numbered steps."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from editing.compositing import composite
from editing.conditioning import ConditionedMasks, MaskConditioningConfig, condition_masks, validate_masks
from editing.editors.auto import resolve_auto
from editing.editors.registry import get_editor
from vglamm.errors import ConfigError, MaskError, NoTargetFoundError, VideoWriteError
from vglamm.io.atomic import refuse_overwrite

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}


@dataclass
class EditResult:
    """What ``edit_video`` did.

    output:  the written file (MP4) or folder (RGBA PNG matte), None when only frames were asked for.
    frames:  (T,H,W,3|4) uint8 edited frames when no output was written or ``return_frames=True``.
    masks:   (T,H,W) bool grounded (or given) masks, before conditioning.
    editor:  the editor that ran (what "auto" resolved to); options its options.
    timings: seconds per stage: load, ground, condition, edit, composite, write.
    """

    output: Path | None
    frames: np.ndarray | None
    masks: np.ndarray
    editor: str
    options: Any = None
    conditioned: ConditionedMasks | None = None
    fps: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


def default_output(video_path: Path, rgba: bool = False) -> Path:
    """``clip.mp4`` → ``clip_edited.mp4`` beside it (``clip_matte/`` for an RGBA cut-out)."""
    stem = video_path.stem if video_path.suffix.lower() in VIDEO_SUFFIXES else video_path.name
    return video_path.with_name(f"{stem}_matte" if rgba else f"{stem}_edited.mp4")


def edit_video(video, target: str | None = None, prompt: str | None = None, *, masks=None, model=None,
               editor: str = "auto", options: dict | Any | None = None, pipeline=None,
               conditioning: MaskConditioningConfig | None = None, output: str | os.PathLike | None = None,
               fps: float | None = None, save_masks: str | os.PathLike | None = None,
               overlay: str | os.PathLike | None = None, keep_audio: bool = True, return_frames: bool | None = None,
               progress: bool = False) -> EditResult:
    """Edit ``target`` in ``video`` as ``prompt`` says; pixels outside the (dilated) target mask are unchanged.

    video:     a video file, a folder of frames, a ``vglamm.Video`` or a (T,H,W,3) uint8 array.
    target:    referring expression grounded by ``model`` (default: ``vglamm.load_default_model()``).
    masks:     (T,H,W) bool array, or a path to an RLE JSON / PNG folder; skips grounding.
    editor:    "auto" (from the prompt), or a registered editor: recolor, blur, pixelate, remove, background,
               highlight, diffusion, sd_inpaint, or your own (``editing.register_editor``).
    options:   the editor's options (dict or its options dataclass), e.g. ``{"color": "blue"}``.
    pipeline:  for generative editors: hub id, local dir or a loaded diffusers pipeline.
    output:    where to write; default ``<input>_edited.mp4`` beside a file input. With array input and no
               output, nothing is written and the frames are returned. Never the input itself.
    save_masks / overlay: optional side outputs (mask PNG folder or ``.json`` RLE; an overlay MP4).
    """
    timings: dict[str, float] = {}
    bar = _progress(progress)

    # 1. Check inputs and load the video
    with _stage("load", timings, bar):
        src_path = Path(video) if isinstance(video, (str, os.PathLike)) else None
        if output is not None and src_path is not None:
            refuse_overwrite(output, src_path, error=VideoWriteError)
        if masks is None and not target:
            raise ConfigError("give a target to ground (target='the red car') or masks=<array or mask file>.")
        frames, fps, src_path = _load(video, fps)

    # 2. Ground the target (or read the given masks)
    with _stage("ground", timings, bar):
        if masks is None:
            raw = _ground(model, _video_for_model(video, frames, fps), target)
            if raw is None or not np.asarray(raw).any():
                raise NoTargetFoundError(f"the target {target!r} was not found in the video: try a more specific "
                                         "expression, or pass masks= directly.")
        else:
            raw = _read_masks(masks, frames.shape)
        raw = validate_masks(raw, frames.shape)

    # 3. Choose the editor and condition the masks for it
    with _stage("condition", timings, bar):
        name = editor
        options = dict(options) if isinstance(options, dict) else options
        if editor == "auto":
            name, auto_opts = resolve_auto(prompt, pipeline)
            if isinstance(options, dict) or options is None:
                options = {**auto_opts, **(options or {})}
        spec = get_editor(name)
        if spec.generative:
            options = _with_pipeline(options, pipeline)
        opts = spec.make_options(options)
        cond = condition_masks(raw, conditioning)
        edit_masks = cond.inverted() if spec.region == "outside" else cond

    # 4. Edit
    with _stage("edit", timings, bar):
        edited = spec.fn(frames, edit_masks, prompt, opts)
        alpha = edit_masks.alpha
        if isinstance(edited, tuple):
            edited, alpha = edited
        edited = np.asarray(edited)
        if edited.shape[:3] != frames.shape[:3] or edited.dtype != np.uint8 or edited.shape[-1] not in (3, 4):
            raise ConfigError(f"editor {name!r} returned frames {edited.shape} {edited.dtype}; it must return "
                              f"uint8 frames of shape {frames.shape[:3]} + (3,) or (4,).")

    # 5. Composite: outside the edit region the output is the source, bit for bit
    with _stage("composite", timings, bar):
        alpha = np.where(edit_masks.region, np.clip(alpha, 0.0, 1.0), 0.0)
        out = composite(frames, edited, alpha)

    # 6. Write (atomically, never over the input) and the side outputs
    with _stage("write", timings, bar):
        rgba = out.shape[-1] == 4
        if output is None and src_path is not None:
            output = default_output(src_path, rgba)
        if output is not None:
            output = Path(output)
            refuse_overwrite(output, src_path, error=VideoWriteError)
            if rgba:
                _write_png_folder(output, out)
            else:
                from vglamm.io.video import write_video

                audio = src_path if keep_audio and src_path is not None and src_path.is_file() else None
                write_video(output, out, fps, audio_from=audio)
        if save_masks is not None:
            _save_masks(save_masks, raw, src_path, target)
        if overlay is not None:
            _write_overlay(overlay, frames, raw, fps, src_path, target)
    if bar is not None:
        bar.close()

    keep = return_frames if return_frames is not None else output is None
    return EditResult(output=output, frames=out if keep else None, masks=raw, editor=name, options=opts,
                      conditioned=cond, fps=fps, timings=timings)


# ---------------------------------------------------------------------------------------------- helpers
def _progress(enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=6, desc="edit", unit="stage")


@contextmanager
def _stage(name: str, timings: dict, bar):
    if bar is not None:
        bar.set_postfix_str(name)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)


def _load(video, fps):
    """(frames, fps, source path or None) for every accepted kind of video input."""
    from vglamm.io.video import Video, load_video

    if isinstance(video, (str, os.PathLike)):
        v = load_video(video)
        return v.frames, fps or v.fps, Path(video)
    if isinstance(video, Video):
        path = Path(video.path) if video.path else None
        return video.frames, fps or video.fps, path
    frames = np.asarray(video)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"video must be a path, a vglamm.Video or a (T,H,W,3) uint8 array; got {frames.shape} "
                          f"{frames.dtype}.")
    return frames, fps or 24.0, None


def _video_for_model(video, frames, fps):
    """What ``model.segment`` gets: a Video with the decoded frames (not decoded twice) and their fps."""
    from vglamm.io.video import Video

    if isinstance(video, Video):
        return video
    n = len(frames)
    return Video(frames=frames, fps=fps, timestamps=np.arange(n) / fps, frame_indices=np.arange(n),
                 source_size=tuple(frames.shape[1:3]),
                 path=str(video) if isinstance(video, (str, os.PathLike)) else "")


def _ground(model, video, target: str):
    if model is None:
        import vglamm

        model = vglamm.load_default_model()
    try:
        return model.segment(video, target)
    except NoTargetFoundError as e:
        raise NoTargetFoundError(f"the target {target!r} was not found in the video ({e}); try a more specific "
                                 "expression, or pass masks= directly.") from e


def _read_masks(masks, video_shape):
    """An array as is; an RLE JSON file (objects merged) or a folder of mask PNGs (any non-zero label)."""
    if not isinstance(masks, (str, os.PathLike)):
        return masks
    from vglamm.io import masks as mio

    path = Path(masks)
    if path.is_dir():
        return mio.load_binary_pngs(path)
    if path.suffix.lower() == ".json":
        objects = mio.load_rle_json(path)["objects"]
        if not objects:
            raise MaskError(f"{path} holds no objects; nothing to edit.")
        return np.any([o["masks"] for o in objects], axis=0)
    raise MaskError(f"mask path {path} is neither an RLE .json file nor a folder of PNGs; give one of those.")


def _with_pipeline(options, pipeline):
    if pipeline is None:
        return options
    if options is None or isinstance(options, dict):
        return {"pipeline": pipeline, **(options or {})}
    if getattr(options, "pipeline", None) is None:
        options.pipeline = pipeline
    return options


def _write_png_folder(folder: Path, frames: np.ndarray) -> None:
    """RGBA frames as ``00000.png``... in ``folder``, written to a temporary folder and renamed into place."""
    import shutil
    import tempfile

    import cv2

    if folder.exists() and any(folder.iterdir()):
        raise VideoWriteError(f"{folder} exists and is not empty; choose a new folder for the RGBA matte frames.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        code = cv2.COLOR_RGBA2BGRA if frames.shape[-1] == 4 else cv2.COLOR_RGB2BGR
        for t, f in enumerate(frames):
            if not cv2.imwrite(str(tmp / f"{t:05d}.png"), cv2.cvtColor(f, code)):
                raise VideoWriteError(f"could not write frame {t} to {tmp}; check the folder is writable.")
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _save_masks(dest, masks: np.ndarray, src_path: Path | None, target: str | None) -> None:
    """``DIR`` → 0/255 PNGs per frame; ``*.json`` → RLE JSON (with the target as the phrase)."""
    from vglamm.io import masks as mio

    dest = Path(dest)
    refuse_overwrite(dest, src_path, error=VideoWriteError)
    if dest.suffix.lower() == ".json":
        mio.save_rle_json(dest, masks, phrases=[target], video=str(src_path) if src_path else None)
    else:
        mio.save_binary_pngs(dest, masks)


def _write_overlay(dest, frames: np.ndarray, masks: np.ndarray, fps: float, src_path: Path | None,
                   target: str | None) -> None:
    from vglamm.io.overlay import write_overlay_video

    refuse_overwrite(dest, src_path, error=VideoWriteError)
    write_overlay_video(dest, frames, [(target, masks)], fps=fps)
