"""Reading and writing videos: files (PyAV, optionally decord) and folders of JPEG/PNG frames (DAVIS layout).

Frames are always ``uint8`` RGB, ``(H, W, 3)`` each. Every frame we hand out keeps its index in the source, so masks
predicted on sampled frames can be mapped back to the original video.
"""

from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import cv2
import numpy as np

from vglamm.errors import ConfigError, VideoReadError, VideoWriteError
from vglamm.io.atomic import atomic_path, refuse_overwrite
from vglamm.io.sampling import fps_indices, uniform_indices

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_FOLDER_FPS = 24.0
# Audio codecs the MP4 muxer takes as they are; anything else is re-encoded to AAC.
_MP4_AUDIO_COPY = {"aac", "mp3", "alac"}

PathLike = str | os.PathLike


@dataclass
class VideoInfo:
    """What ``probe_video`` finds without decoding: frame count, rate, ``size`` (H, W), duration in seconds."""

    num_frames: int
    fps: float
    size: tuple[int, int]
    duration: float
    has_audio: bool
    codec: str
    path: str = ""
    # counter-clockwise degrees (a multiple of 90) the reader turns every frame by so it stands as players show it
    # (the display matrix phones write for portrait video); ``size`` is the upright size
    rotation: int = 0


@dataclass
class Video:
    """Decoded frames and where they come from.

    frames:        (T, H, W, 3) uint8 RGB.
    fps:           frame rate of the returned frames (the source rate, the requested rate, or the mean rate
                   after ``max_frames`` thinned them).
    timestamps:    (T,) presentation time of each frame in the source, seconds.
    frame_indices: (T,) index of each frame in the source.
    source_size:   (H, W) of the source before any resizing.
    """

    frames: np.ndarray
    fps: float
    timestamps: np.ndarray
    frame_indices: np.ndarray
    source_size: tuple[int, int]
    path: str = ""

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the returned frames."""
        return tuple(self.frames.shape[1:3])


# ----------------------------------------------------------------------------------------------------------- probing

def _frame_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise VideoReadError(f"frame folder {folder} holds no .jpg/.jpeg/.png frames. "
                             "Point to a folder of frames (sorted by name) or to a video file.")
    return files


def _folder_size(files: list[Path]) -> tuple[int, int]:
    from PIL import Image  # reads only the header, so checking every frame stays cheap

    sizes = {}
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.setdefault(im.size, f)
        except OSError as e:
            raise VideoReadError(f"frame {f} cannot be read as an image ({e}). Replace or remove it.") from e
    if len(sizes) > 1:
        found = ", ".join(f"{w}x{h} ({p.name})" for (w, h), p in sizes.items())
        raise VideoReadError(f"frames in {files[0].parent} have different sizes: {found}. "
                             "Resize them to one size before loading the folder as a video.")
    (w, h), = sizes
    return h, w


def _open(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path), "r")
    except av.error.FFmpegError as e:
        raise VideoReadError(f"{path} cannot be opened as a video ({e}). The file is not a video or it is "
                             "truncated/corrupted; re-export or re-download it.") from e
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path} has no video stream. Pass a video file or a folder of frames.")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.codec is None:
        container.close()
        raise VideoReadError(f"{path}: its video codec is not supported by this FFmpeg build. "
                             "Transcode it to H.264 (e.g. `ffmpeg -i in -c:v libx264 out.mp4`).")
    return container


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VideoReadError(f"video {path} does not exist. Check the path (a video file or a folder of frames).")


def probe_video(path: PathLike, *, fps: float | None = None) -> VideoInfo:
    """Frame count, rate, size, duration, audio and codec of a video file or frame folder.

    For a folder ``fps`` is the rate to assume (default 24). For a file whose header has no frame count the
    packets are counted (no decoding).
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        files = _frame_files(path)
        rate = float(fps or DEFAULT_FOLDER_FPS)
        return VideoInfo(len(files), rate, _folder_size(files), len(files) / rate, False,
                         files[0].suffix.lower().lstrip("."), str(path))
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        rate = float(fps or (rate if rate else DEFAULT_FOLDER_FPS))
        n = stream.frames
        if not n:
            try:
                n = sum(1 for pkt in container.demux(stream) if pkt.size)
            except av.error.FFmpegError:
                n = 0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = n / rate
        rotation = _display_rotation(path)
        h, w = stream.codec_context.height, stream.codec_context.width
        return VideoInfo(int(n), rate, (w, h) if rotation % 180 else (h, w), duration,
                         bool(container.streams.audio), stream.codec_context.name, str(path), rotation)


def _quarter_turns(degrees: float | None) -> int:
    """A display-matrix angle (counter-clockwise degrees) as the nearest multiple of 90 in [0, 360)."""
    return int(round((degrees or 0) / 90)) % 4 * 90


def _display_rotation(path: Path) -> int:
    """The rotation of the first frame's display matrix (0 when it has none or does not decode)."""
    with _open(path) as container:
        try:
            frame = next(container.decode(container.streams.video[0]), None)
        except av.error.FFmpegError:
            return 0
        return _quarter_turns(getattr(frame, "rotation", 0))


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded frame counter-clockwise by ``rotation`` degrees (a multiple of 90), as players do."""
    return np.ascontiguousarray(np.rot90(rgb, rotation // 90)) if rotation else rgb


# ----------------------------------------------------------------------------------------------------------- reading

def _target_size(size: int | tuple[int, int] | None, src: tuple[int, int]) -> tuple[int, int] | None:
    if size is None:
        return None
    h, w = src
    if isinstance(size, (int, np.integer)):
        if size < 1:
            raise ConfigError(f"size must be positive, got {size}.")
        scale = size / min(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"size must be an int (shorter side) or (H, W), got {size!r}.")
    return int(size[0]), int(size[1])


def _resize(frame: np.ndarray, hw: tuple[int, int] | None) -> np.ndarray:
    if hw is None or frame.shape[:2] == hw:
        return frame
    # INTER_AREA avoids aliasing when shrinking; it degrades to bilinear-like when enlarging.
    shrink = hw[0] * hw[1] < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _wanted(indices) -> dict[int, int] | None:
    """Source index -> how many times it is requested (sampling may repeat the last frame)."""
    if indices is None:
        return None
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size and idx.min() < 0:
        raise ConfigError(f"frame indices must be >= 0, got {idx.min()}.")
    uniq, counts = np.unique(idx, return_counts=True)
    return dict(zip(uniq.tolist(), counts.tolist()))


def _warn_short(path, wanted: dict[int, int] | None, n_decoded: int, expected: int = 0) -> None:
    if n_decoded == 0:
        raise VideoReadError(f"{path}: no frame could be decoded. The file is empty, truncated or corrupted; "
                             "re-export or re-download it.")
    needed = max(wanted) + 1 if wanted else expected
    if needed > n_decoded:
        warnings.warn(f"{path}: only {n_decoded} frames decode but {needed} were expected; the file is probably "
                      "truncated. Returning the frames that decoded.", stacklevel=3)


def _iter_pyav(path: Path, wanted: dict[int, int] | None, expected: int) -> Iterator[tuple[int, float, np.ndarray]]:
    container = _open(path)
    last = max(wanted) if wanted else None
    n = -1
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or DEFAULT_FOLDER_FPS)
        frames = container.decode(stream)
        while last is None or n < last:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                # A damaged tail: keep what decoded so far, _warn_short reports it.
                warnings.warn(f"{path}: decoding stopped after frame {n} ({e}).", stacklevel=3)
                break
            n += 1
            repeat = 1 if wanted is None else wanted.get(n, 0)
            if repeat:
                # only selected frames pay for colour conversion
                rgb = _upright(frame.to_ndarray(format="rgb24"), _quarter_turns(getattr(frame, "rotation", 0)))
                t = float(frame.time) if frame.time is not None else n / rate
                for _ in range(repeat):
                    yield n, t, rgb
    finally:
        container.close()
    _warn_short(path, wanted, n + 1, expected)


def _iter_decord(path: Path, wanted: dict[int, int] | None, chunk: int = 16):
    try:
        import decord
    except ImportError as e:  # pragma: no cover - decord is a declared dependency
        raise ConfigError("backend='decord' needs the decord package: pip install decord.") from e
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    except decord.DECORDError as e:
        raise VideoReadError(f"{path} cannot be opened as a video by decord ({e}). The file is not a video or "
                             "is damaged; try backend='pyav' or re-export it.") from e
    n_total, rate = len(reader), float(reader.get_avg_fps() or DEFAULT_FOLDER_FPS)
    if wanted is None:
        order = list(range(n_total))
    else:
        order = [i for i, c in sorted(wanted.items()) if i < n_total for _ in range(c)]
    _warn_short(path, wanted, n_total)
    for start in range(0, len(order), chunk):
        batch = order[start:start + chunk]
        try:
            frames = reader.get_batch(batch).asnumpy()
        except decord.DECORDError as e:
            raise VideoReadError(f"decord failed on {path} ({str(e).splitlines()[0]}); use backend='pyav'.") from e
        for i, rgb in zip(batch, frames):
            yield i, i / rate, rgb  # decord applies the display matrix itself


def _iter_folder(files: list[Path], wanted: dict[int, int] | None, rate: float):
    order = range(len(files)) if wanted is None else [i for i, c in sorted(wanted.items()) for _ in range(c)]
    _warn_short(files[0].parent, wanted, len(files))
    size = None
    for i in order:
        if i >= len(files):
            break
        bgr = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VideoReadError(f"frame {files[i]} cannot be read as an image. Replace or remove it.")
        if size is not None and bgr.shape != size:
            raise VideoReadError(f"frame {files[i]} is {bgr.shape[1]}x{bgr.shape[0]} but earlier frames are "
                                 f"{size[1]}x{size[0]}. Resize the frames to one size.")
        size = bgr.shape
        yield i, i / rate, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _iter_source(path: Path, info: VideoInfo, wanted, backend: str):
    if path.is_dir():
        return _iter_folder(_frame_files(path), wanted, info.fps)
    if backend == "pyav":
        return _iter_pyav(path, wanted, info.num_frames)
    if backend == "decord":
        return _iter_decord(path, wanted)
    raise ConfigError(f"unknown video backend {backend!r}; use 'pyav' or 'decord'.")


def _select(info: VideoInfo, fps: float | None, max_frames: int | None) -> tuple[np.ndarray | None, float]:
    """Source indices to read (None = all) and the frame rate of the result."""
    n = info.num_frames
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"max_frames must be >= 1, got {max_frames}.")
    if fps is None and max_frames is None:
        return None, info.fps
    if n < 1:  # header without a frame count: read everything and let the decoder say how many there are
        raise VideoReadError(f"{info.path}: the frame count is unknown, so it cannot be resampled. "
                             "Load it without fps/max_frames, or re-mux it (ffmpeg -i in -c copy out.mp4).")
    base_rate, candidates = (info.fps, n) if fps is None else (float(fps), len(fps_indices(n, info.fps, fps)))
    idx = fps_indices(n, info.fps, fps, max_frames) if fps is not None else (
        uniform_indices(n, max_frames) if n > max_frames else np.arange(n))
    # Thinning by max_frames lowers the mean rate of what is returned.
    out_fps = base_rate * (len(idx) - 1) / (candidates - 1) if 1 < len(idx) < candidates else base_rate
    return idx, out_fps


def iter_video(path: PathLike, *, size: int | tuple[int, int] | None = None, fps: float | None = None,
               max_frames: int | None = None, indices: Iterable[int] | None = None, batch_size: int | None = None,
               backend: str = "pyav", source_fps: float | None = None):
    """Stream ``(source_index, frame)`` pairs, one decoded frame at a time (the clip is never held).

    ``fps`` / ``max_frames`` sample as in ``load_video``; ``indices`` picks source frames directly (sorted on
    output). With ``batch_size`` it yields ``(indices (B,), frames (B, H, W, 3))`` instead. ``size`` is an int
    (shorter side) or (H, W). ``source_fps`` is the rate of a frame folder (default 24).
    """
    path = Path(path)
    info = probe_video(path, fps=source_fps)
    if indices is not None and (fps is not None or max_frames is not None):
        raise ConfigError("give either indices or fps/max_frames to iter_video, not both.")
    idx = indices if indices is not None else _select(info, fps, max_frames)[0]
    hw = _target_size(size, info.size)
    frames = ((i, _resize(rgb, hw)) for i, _, rgb in _iter_source(path, info, _wanted(idx), backend))
    if batch_size is None:
        yield from frames
        return
    while batch := list(itertools.islice(frames, batch_size)):
        yield np.array([i for i, _ in batch]), np.stack([f for _, f in batch])


def load_video(path: PathLike, *, fps: float | None = None, max_frames: int | None = None,
               size: int | tuple[int, int] | None = None, backend: str = "pyav",
               source_fps: float | None = None) -> Video:
    """Decode a video file or a folder of JPEG/PNG frames (sorted by name) into a ``Video``.

    fps:        resample to this rate (each output time takes the frame shown then); None keeps every frame.
    max_frames: at most this many frames, picked uniformly among the (resampled) frames. The reference model
                reads ``fps=1, max_frames=64``.
    size:       int (shorter side, aspect kept) or (H, W).
    backend:    "pyav" (threaded decode, default) or "decord" (fast random access for sparse sampling).
    source_fps: rate of a frame folder (default 24); ignored for files.
    """
    path = Path(path)
    info = probe_video(path, fps=source_fps)
    idx, out_fps = _select(info, fps, max_frames)
    hw = _target_size(size, info.size)
    indices, times, frames = [], [], []
    for i, t, rgb in _iter_source(path, info, _wanted(idx), backend):
        indices.append(i)
        times.append(t)
        frames.append(_resize(rgb, hw))
    return Video(frames=np.stack(frames), fps=float(out_fps), timestamps=np.asarray(times, dtype=np.float64),
                 frame_indices=np.asarray(indices, dtype=np.int64), source_size=info.size, path=str(path))


# ----------------------------------------------------------------------------------------------------------- writing

def exact_rate(fps: float | Fraction) -> Fraction:
    """The frame rate as an exact fraction: NTSC rates (23.976, 29.97, 59.94, ...) become N*1000/1001."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        if not fps or fps <= 0:
            raise VideoWriteError(f"fps must be positive, got {fps}.")
        ntsc = Fraction(round(fps * 1.001) * 1000, 1001)
        # Within 0.01 % of an NTSC rate (5 is 0.1 % from 4.995, so it stays 5).
        rate = ntsc if abs(float(ntsc) - fps) < 1e-4 * fps else Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise VideoWriteError(f"fps must be positive, got {fps}.")
    return rate


def _frames_of(frames) -> Iterator[np.ndarray]:
    if isinstance(frames, Video):
        frames = frames.frames
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise VideoWriteError(f"frames must be (T, H, W, 3) uint8, got an array of shape {frames.shape}.")
    return iter(frames)


def _check_frame(frame, shape, i: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise VideoWriteError(f"frame {i} has dtype {frame.dtype}; frames must be uint8 RGB "
                              "(e.g. (x * 255).round().clip(0, 255).astype(np.uint8) for floats in [0, 1]).")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoWriteError(f"frame {i} has shape {frame.shape}; each frame must be (H, W, 3) RGB.")
    if shape is not None and frame.shape != shape:
        raise VideoWriteError(f"frame {i} has shape {frame.shape} but frame 0 is {shape}; all frames must match.")
    return frame


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class _AudioCopier:
    """Feeds the audio of another file into the output, interleaved with the video by time."""

    def __init__(self, source: Path, out: av.container.OutputContainer):
        self.src = av.open(str(source))
        in_stream = self.src.streams.audio[0]
        self.copy = in_stream.codec_context.name in _MP4_AUDIO_COPY
        if self.copy:
            self.stream = out.add_stream_from_template(in_stream)
        else:
            self.stream = out.add_stream("aac", rate=in_stream.codec_context.sample_rate or 48000)
            # WAV often declares "N channels" without an order, which the AAC encoder refuses: use the standard one.
            n = in_stream.codec_context.layout.nb_channels
            self.stream.layout = {1: "mono", 2: "stereo"}.get(n, in_stream.codec_context.layout.name)
            self.stream.format = "fltp"  # the only sample format FFmpeg's AAC encoder takes
        self.packets = self._packets(in_stream)
        self.pending = next(self.packets, None)

    def _packets(self, in_stream):
        for packet in self.src.demux(in_stream):
            if packet.dts is None:
                continue
            if self.copy:
                yield packet
                continue
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                continue
            for frame in decoded:
                frame.pts = None  # let the encoder number samples from 0, continuous
                yield from self.stream.encode(frame)
        if not self.copy:
            yield from self.stream.encode(None)

    def mux_until(self, out, t_end: float | None) -> None:
        """Mux audio packets that start before ``t_end`` seconds (all remaining ones when None)."""
        while self.pending is not None:
            t = float(self.pending.pts * self.pending.time_base) if self.pending.pts is not None else 0.0
            if t_end is not None and t >= t_end:
                return
            self.pending.stream = self.stream
            out.mux(self.pending)
            self.pending = next(self.packets, None)

    def close(self):
        self.src.close()


def write_video(path: PathLike, frames, fps: float | Fraction, *, audio_from: PathLike | None = None,
                crf: int = 18, preset: str = "medium") -> Path:
    """Write frames as an H.264 (yuv420p) MP4 with exactly these frames at exactly this rate; returns the path.

    frames:     a (T, H, W, 3) uint8 RGB array, a ``Video``, or any iterable of (H, W, 3) uint8 frames (encoded as
                they come, so long videos need not sit in memory).
    fps:        frame rate; NTSC rates such as 29.97 are stored as 30000/1001 (or pass a ``Fraction``).
    audio_from: a file whose first audio track is copied (re-encoded to AAC when MP4 cannot hold its codec);
                audio past the end of the video is dropped. No audio track there -> a silent video.
    Odd widths/heights are padded to even (yuv420p needs it) by repeating the last row/column, so such a video
    reads back one pixel larger. The file is written atomically and never replaces an input of the call.
    """
    path = Path(path)
    sources = [audio_from, frames.path if isinstance(frames, Video) and frames.path else None]
    refuse_overwrite(path, *sources, error=VideoWriteError)
    if audio_from is not None and not Path(audio_from).is_file():
        raise VideoWriteError(f"audio_from={audio_from} does not exist. Pass an existing media file or None.")
    rate = exact_rate(fps)
    it = _frames_of(frames)
    first = next(it, None)
    if first is None:
        raise VideoWriteError(f"no frames to write to {path}; pass at least one (H, W, 3) uint8 frame.")
    first = _check_frame(first, None, 0)
    h, w = first.shape[:2]
    try:
        with atomic_path(path, suffix=".mp4") as tmp:
            out = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
            audio = None
            try:
                stream = out.add_stream("libx264", rate=rate)
                stream.width, stream.height = w + w % 2, h + h % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": preset}
                stream.codec_context.time_base = 1 / rate
                if audio_from is not None:
                    with av.open(str(audio_from)) as probe:
                        has_audio = bool(probe.streams.audio)
                    audio = _AudioCopier(Path(audio_from), out) if has_audio else None
                for i, frame in enumerate(itertools.chain([first], it)):
                    frame = _pad_even(_check_frame(frame, first.shape, i))
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                    vf.pts = i
                    vf.time_base = 1 / rate
                    out.mux(stream.encode(vf))
                    if audio is not None:
                        audio.mux_until(out, float((i + 1) / rate))
                out.mux(stream.encode(None))
                n_frames = i + 1
                if audio is not None:
                    audio.mux_until(out, float(n_frames / rate))
            finally:
                if audio is not None:
                    audio.close()
                out.close()
    except av.error.FFmpegError as e:
        raise VideoWriteError(f"could not write {path}: {e}. Check the folder is writable and the frames valid.") from e
    return path
