"""Video reading, sampling and writing on small synthetic clips."""

from fractions import Fraction

import av
import numpy as np
import pytest

from vglamm.errors import ConfigError, VideoReadError, VideoWriteError
from vglamm.io import (exact_rate, fps_indices, iter_video, load_video, probe_video, segment_indices,
                       uniform_indices, write_video)


def smooth_clip(t=12, h=36, w=48):
    """Slowly moving smooth colours: compresses well, so pixel errors measure the codec, not noise."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    chans = [128 + 80 * np.sin(xx / 9 + tt / 6 + c) * np.cos(yy / 11 - c) for c in range(3)]
    return np.stack(chans, -1).round().clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4", smooth_clip(30, 64, 96), 10)


def make_av_source(path, n_frames=20, fps=10, seconds=2.0, sr=16000):
    """An MP4 with a video track and an AAC sine-wave audio track of ``seconds``."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        aud = c.add_stream("aac", rate=sr)
        aud.layout = "mono"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 10, np.uint8), format="rgb24")
            frame.pts = i
            c.mux(vs.encode(frame))
        c.mux(vs.encode(None))
        wave = np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr).astype(np.float32)[None]
        for k in range(0, wave.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, k:k + 1024]), format="flt", layout="mono")
            af.sample_rate, af.pts = sr, k
            c.mux(aud.encode(af))
        c.mux(aud.encode(None))
    return path


def audio_seconds(path):
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        return sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].codec_context.sample_rate


# ---------------------------------------------------------------------------------------------------------- sampling

def test_uniform_indices_spread_and_pad():
    assert uniform_indices(100, 5).tolist() == [0, 25, 50, 74, 99]
    assert uniform_indices(3, 5).tolist() == [0, 1, 2, 2, 2]
    assert uniform_indices(1, 1).tolist() == [0]
    with pytest.raises(ConfigError):
        uniform_indices(0, 4)


def test_fps_indices_rates():
    assert fps_indices(90, 30, 1).tolist() == [0, 30, 60]
    # 300 frames at 29.97 fps last 10.01 s: 11 output times, the last one on frame 299.
    assert fps_indices(300, 30000 / 1001, 1).tolist() == [0, 29, 59, 89, 119, 149, 179, 209, 239, 269, 299]
    up = fps_indices(4, 2, 4)  # above the source rate: frames repeat
    assert up.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    capped = fps_indices(3000, 30, 1, max_frames=64)
    assert len(capped) == 64 and capped[0] == 0 and capped[-1] == 2970 and np.all(np.diff(capped) > 0)


def test_segment_indices_shape_and_padding():
    seg = segment_indices(160, 4, 4)
    assert seg.shape == (4, 4) and np.all(np.diff(seg.ravel()) > 0) and seg[-1, -1] == 159
    short = segment_indices(5, 4, 4)
    assert short.ravel().tolist() == [0, 1, 2, 3, 4] + [4] * 11


# ----------------------------------------------------------------------------------------------------------- reading

def test_round_trip_frames_fps_and_pixels(tmp_path):
    frames = smooth_clip()
    path = write_video(tmp_path / "a.mp4", frames, 12)
    info = probe_video(path)
    assert (info.num_frames, info.fps, info.size, info.codec, info.has_audio) == (12, 12.0, (36, 48), "h264", False)
    video = load_video(path)
    assert video.frames.shape == frames.shape and video.frames.dtype == np.uint8
    assert video.fps == 12.0 and video.frame_indices.tolist() == list(range(12))
    np.testing.assert_allclose(video.timestamps, np.arange(12) / 12, atol=1e-6)
    assert np.abs(video.frames.astype(int) - frames).mean() < 3.0


@pytest.mark.parametrize("fps", [29.97, 23.976, 12.5])
def test_fps_is_exact(tmp_path, fps):
    path = write_video(tmp_path / "r.mp4", smooth_clip(5, 16, 16), fps)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == exact_rate(fps) and stream.frames == 5
    assert exact_rate(29.97) == Fraction(30000, 1001) and exact_rate(59.94) == Fraction(60000, 1001)
    assert [exact_rate(r) for r in (5, 24, 30, 12.5)] == [5, 24, 30, Fraction(25, 2)]


def test_odd_size_padded_by_edge_replication(tmp_path):
    frames = smooth_clip(6, 35, 47)
    video = load_video(write_video(tmp_path / "odd.mp4", frames, 8))
    assert video.frames.shape == (6, 36, 48, 3)
    assert np.abs(video.frames[:, :35, :47].astype(int) - frames).mean() < 3.0
    # The padding repeats the last row/column.
    assert np.abs(video.frames[:, 35, :47].astype(int) - frames[:, 34]).mean() < 6.0


def test_streaming_write_from_generator(tmp_path):
    frames = smooth_clip(9)
    path = write_video(tmp_path / "g.mp4", (f for f in frames), 9)
    assert load_video(path).frames.shape == frames.shape


def test_sampling_and_resizing(clip_path):
    video = load_video(clip_path, fps=2, max_frames=4, size=12)
    # 30 frames at 10 fps resampled to 2 fps = [0, 5, ..., 25]; 4 of those picked uniformly.
    assert video.frame_indices.tolist() == [0, 10, 15, 25]
    assert video.frames.shape == (4, 12, 18, 3) and video.source_size == (64, 96)
    np.testing.assert_allclose(video.timestamps, video.frame_indices / 10, atol=1e-6)
    assert video.fps == pytest.approx(2 * 3 / 5)
    full = load_video(clip_path)
    small = load_video(clip_path, size=(18, 24))
    assert small.frames.shape == (30, 18, 24, 3)
    import cv2

    assert np.array_equal(small.frames[0], cv2.resize(full.frames[0], (24, 18), interpolation=cv2.INTER_AREA))
    sampled = load_video(clip_path, fps=2)
    assert sampled.fps == 2.0 and np.array_equal(sampled.frames, full.frames[::5])


def test_decord_backend_matches_pyav(clip_path):
    a = load_video(clip_path, fps=3, backend="pyav")
    b = load_video(clip_path, fps=3, backend="decord")
    assert a.frame_indices.tolist() == b.frame_indices.tolist()
    assert np.abs(a.frames.astype(int) - b.frames).mean() < 1.0


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path, degrees):
    """A phone-style clip: stored landscape with a display matrix. Both backends return it as players show it."""
    frames = np.zeros((3, 32, 64, 3), np.uint8)
    frames[:, :8, :16] = 255  # a white block in the stored top-left corner
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(degrees)  # counter-clockwise, as the display matrix stores it
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    upright = np.rot90(frames[0], degrees // 90)  # turning counter-clockwise, as a player does
    info = probe_video(path)
    assert info.rotation == degrees % 360 and info.size == upright.shape[:2]
    for backend in ("pyav", "decord"):
        video = load_video(path, backend=backend)
        assert video.frames.shape == (3, *upright.shape), backend
        white = video.frames[0].mean(-1) > 128
        assert (white == (upright.mean(-1) > 128)).mean() > 0.97, backend
    plain = tmp_path / "plain.mp4"
    write_video(plain, frames, 10)
    assert probe_video(plain).rotation == 0 and load_video(plain).frames.shape == frames.shape


def test_iter_video_streams_with_indices(clip_path):
    pairs = list(iter_video(clip_path, indices=[3, 7, 7]))
    assert [i for i, _ in pairs] == [3, 7, 7]
    full = load_video(clip_path)
    assert np.array_equal(pairs[0][1], full.frames[3])
    batches = list(iter_video(clip_path, batch_size=8, size=(12, 16)))
    assert [len(i) for i, _ in batches] == [8, 8, 8, 6]
    assert batches[-1][1].shape == (6, 12, 16, 3) and batches[-1][0][-1] == 29


def test_frame_folder(tmp_path):
    import cv2

    frames = smooth_clip(5, 20, 30)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), f[..., ::-1])
    video = load_video(folder)
    assert np.array_equal(video.frames, frames) and video.fps == 24.0
    assert load_video(folder, source_fps=10, fps=5).frame_indices.tolist() == [0, 2, 4]


# ----------------------------------------------------------------------------------------------------------- audio

def test_audio_is_copied(tmp_path):
    src = make_av_source(tmp_path / "src.mp4")
    out = write_video(tmp_path / "out.mp4", smooth_clip(20, 32, 32), 10, audio_from=src)
    assert probe_video(out).has_audio
    assert audio_seconds(out) == pytest.approx(audio_seconds(src), abs=0.1)
    assert load_video(out).frames.shape[0] == 20


def test_audio_reencoded_from_wav(tmp_path):
    wav = tmp_path / "s.wav"
    with av.open(str(wav), "w") as c:
        stream = c.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        pcm = (np.sin(np.arange(8000) / 5) * 8000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 8000
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    out = write_video(tmp_path / "o.mp4", smooth_clip(10, 16, 16), 10, audio_from=wav)
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    # AAC adds 1024 priming samples (0.128 s at 8 kHz) and pads the last frame.
    assert audio_seconds(out) == pytest.approx(1.0, abs=0.2)


def test_no_audio_source_gives_silent_video(tmp_path, clip_path):
    out = write_video(tmp_path / "s.mp4", smooth_clip(4, 16, 16), 4, audio_from=clip_path)
    assert not probe_video(out).has_audio


# ---------------------------------------------------------------------------------------------------------- errors

def test_missing_and_not_a_video(tmp_path):
    with pytest.raises(VideoReadError, match="does not exist"):
        load_video(tmp_path / "nope.mp4")
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoReadError, match="not a video"):
        load_video(fake)


def test_truncated_file_returns_decoded_frames_with_warning(tmp_path):
    # Noise does not compress, so the frames (not the header) fill the file and half of it holds whole frames.
    noisy = np.random.default_rng(0).integers(0, 256, (30, 32, 48, 3), dtype=np.uint8)
    clip_path = write_video(tmp_path / "noisy.mp4", noisy, 10)
    data = clip_path.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="truncated"):
        video = load_video(half)
    assert 0 < len(video) < 30
    full = load_video(clip_path)
    assert np.array_equal(video.frames, full.frames[: len(video)])
    headless = tmp_path / "headless.mp4"
    headless.write_bytes(data[: 200])
    with pytest.raises(VideoReadError):
        load_video(headless)


def test_unsupported_codec(tmp_path, clip_path):
    broken = tmp_path / "codec.mp4"
    broken.write_bytes(clip_path.read_bytes().replace(b"avc1", b"zzzz"))
    with pytest.raises(VideoReadError, match="codec"):
        load_video(broken)


def test_zero_decodable_frames(tmp_path, clip_path):
    data = bytearray(clip_path.read_bytes())
    start = data.index(b"mdat") + 4
    data[start:] = bytes(len(data) - start)  # keep the header, zero every frame
    zeroed = tmp_path / "zeroed.mp4"
    zeroed.write_bytes(bytes(data))
    with pytest.raises(VideoReadError, match="no frame could be decoded"), pytest.warns(UserWarning, match="stopped"):
        load_video(zeroed)


def test_bad_frame_folders(tmp_path):
    import cv2

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoReadError, match="no .jpg"):
        load_video(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "0.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(mixed / "1.png"), np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(VideoReadError, match="different sizes"):
        load_video(mixed)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "0.jpg").write_bytes(b"garbage")
    with pytest.raises(VideoReadError, match="cannot be read"):
        load_video(bad)


def test_write_errors(tmp_path, clip_path):
    frames = smooth_clip(3, 16, 16)
    with pytest.raises(VideoWriteError, match="input"):
        write_video(clip_path, frames, 10, audio_from=clip_path)
    video = load_video(clip_path, max_frames=2)
    with pytest.raises(VideoWriteError, match="input"):
        write_video(clip_path, video, 10)
    with pytest.raises(VideoWriteError, match="uint8"):
        write_video(tmp_path / "f.mp4", frames.astype(np.float32), 10)
    with pytest.raises(VideoWriteError, match="no frames"):
        write_video(tmp_path / "e.mp4", iter([]), 10)
    with pytest.raises(VideoWriteError, match="frame 1"):
        write_video(tmp_path / "m.mp4", [frames[0], frames[0, :8]], 10)
    assert not (tmp_path / "m.mp4").exists() and not list(tmp_path.glob(".*"))  # atomic: nothing left behind
    with pytest.raises(ConfigError):
        load_video(clip_path, backend="opencv")
