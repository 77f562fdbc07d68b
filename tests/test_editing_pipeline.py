"""edit_video on files: output naming, fps/frame count/audio kept, side outputs, grounding, errors, the CLI."""

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from editing import edit_video
from vglamm.errors import MaskError, NoTargetFoundError, VideoWriteError
from vglamm.io.video import load_video, probe_video

T, H, W, FPS = 12, 48, 64, 12


def _frames_and_masks():
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (1, H // 8, W // 8, 3), dtype=np.uint8), T, axis=0)
    frames = np.ascontiguousarray(frames.repeat(8, 1).repeat(8, 2))
    masks = np.zeros((T, H, W), bool)
    masks[:, 12:36, 16:40] = True
    frames[masks] = (210, 40, 40)
    return frames, masks


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """An MP4 with H.264 video and an AAC audio track (a 440 Hz tone)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames, masks = _frames_and_masks()
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.options = {"crf": "10"}
        aus = out.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for i, f in enumerate(frames):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * T // FPS) / 16000)).astype(np.float32)
        for s in range(0, len(samples), 1024):
            af = av.AudioFrame.from_ndarray(samples[None, s:s + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, s, Fraction(1, 16000)
            out.mux(aus.encode(af))
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    return path, masks


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_file_edit_keeps_frames_fps_audio_and_input(clip):
    path, masks = clip
    before = _digest(path)
    r = edit_video(path, masks=masks, prompt="make it blue", return_frames=True)
    assert r.output == path.with_name("clip_edited.mp4") and r.output.exists() and r.editor == "recolor"
    info, src = probe_video(r.output), probe_video(path)
    assert info.num_frames == src.num_frames == T and abs(info.fps - src.fps) < 1e-6 and info.has_audio
    assert _digest(path) == before
    # exact before encoding; after H.264 still close outside the region, and blue inside
    source = load_video(path).frames
    assert np.array_equal(r.frames[~r.conditioned.region], source[~r.conditioned.region])
    written = load_video(r.output).frames.astype(int)
    inside = written[:, 16:32, 20:36].reshape(-1, 3).mean(0)
    assert inside[2] > inside[0] + 40
    assert np.abs(written[:, :8] - source[:, :8].astype(int)).mean() < 3
    r.output.unlink()


def test_side_outputs_and_masks_from_files(clip, tmp_path):
    path, masks = clip
    out = tmp_path / "o.mp4"
    r = edit_video(path, masks=masks, editor="blur", output=out, save_masks=tmp_path / "m.json",
                   overlay=tmp_path / "ov.mp4")
    assert out.exists() and (tmp_path / "ov.mp4").exists() and r.frames is None
    edit_video(path, masks=masks, editor="pixelate", output=tmp_path / "o2.mp4", save_masks=tmp_path / "pngs")
    for saved in (tmp_path / "m.json", tmp_path / "pngs"):
        r2 = edit_video(path, masks=saved, editor="blur", output=tmp_path / "o3.mp4", return_frames=True)
        assert np.array_equal(r2.masks, masks)
        (tmp_path / "o3.mp4").unlink()


def test_grounding_with_a_model_and_target_not_found(clip):
    path, masks = clip

    class Model:
        def __init__(self, result):
            self.result, self.seen = result, None

        def segment(self, video, expression):
            self.seen = (video.frames.shape, expression)
            if isinstance(self.result, Exception):
                raise self.result
            return self.result

    m = Model(masks)
    frames, _ = _frames_and_masks()
    r = edit_video(frames, "the red square", "blur it", model=m)
    assert m.seen == ((T, H, W, 3), "the red square") and r.editor == "blur" and r.output is None
    with pytest.raises(NoTargetFoundError, match="the purple cow"):
        edit_video(frames, "the purple cow", "blur it", model=Model(np.zeros_like(masks)))
    with pytest.raises(NoTargetFoundError, match="the purple cow"):
        edit_video(frames, "the purple cow", "blur it", model=Model(NoTargetFoundError("no [SEG]")))


def test_bad_inputs_give_typed_errors(clip, tmp_path):
    path, masks = clip
    with pytest.raises(VideoWriteError, match="input"):
        edit_video(path, masks=masks, editor="blur", output=path)
    with pytest.raises(MaskError, match="does not match"):
        edit_video(path, masks=masks[:, :, :-1], editor="blur", output=tmp_path / "x.mp4")
    with pytest.raises(MaskError, match="empty"):
        edit_video(path, masks=np.zeros_like(masks), editor="blur", output=tmp_path / "x.mp4")
    with pytest.raises(MaskError, match="does not exist"):
        edit_video(path, masks=tmp_path / "missing.json", editor="blur", output=tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_transparent_matte_is_written_as_rgba_pngs(clip, tmp_path):
    from PIL import Image

    path, masks = clip
    r = edit_video(path, masks=masks, editor="background", options={"mode": "transparent"}, output=tmp_path / "matte")
    files = sorted(r.output.glob("*.png"))
    assert len(files) == T
    im = np.asarray(Image.open(files[0]))
    assert im.shape == (H, W, 4) and im[20, 20, 3] == 255 and im[2, 2, 3] == 0


def test_cli_edit(clip, tmp_path, capsys):
    from vglamm.cli import main
    from vglamm.io.masks import save_rle_json

    path, masks = clip
    save_rle_json(tmp_path / "m.json", masks)
    out = tmp_path / "cli.mp4"
    rc = main(["edit", str(path), "--masks", str(tmp_path / "m.json"), "--prompt", "make it green", "-o", str(out),
               "--option", "strength=0.8", "-q"])
    assert rc == 0 and out.exists() and probe_video(out).num_frames == T
    assert "recolor" in capsys.readouterr().out
    rc = main(["edit", str(path), "--masks", str(tmp_path / "m.json"), "--prompt", "turn it into a dragon",
               "-o", str(tmp_path / "d.mp4"), "-q"])
    assert rc == 2 and "pipeline" in capsys.readouterr().err and not (tmp_path / "d.mp4").exists()
