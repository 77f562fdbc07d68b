"""The generative editors: a tiny random WanVACEPipeline end to end (no download), and fake pipelines that
make the plumbing (windows, padding, crops, per-frame adapter) checkable exactly."""

from types import SimpleNamespace

import numpy as np
import pytest

from editing import edit_video
from vglamm.errors import ConfigError, MissingWeightsError

FAST = {"num_inference_steps": 2, "guidance_scale": 1.0, "pipeline_kwargs": {"max_sequence_length": 16}}


class Spy:
    """Wraps a pipeline, records every call's keyword arguments."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kw):
        self.calls.append(kw)
        return self.pipe(**kw)


class IdentityVideoPipeline:
    """Returns its input video: after un-padding, resizing and blending the edit must give the source back."""

    vae_scale_factor_spatial = 8

    def __init__(self):
        self.calls = []

    def __call__(self, video, mask, height, width, num_frames, **kw):
        self.calls.append(dict(video=video, mask=mask, height=height, width=width, num_frames=num_frames, **kw))
        assert len(video) == len(mask) == num_frames and num_frames % 4 == 1
        assert height % 16 == 0 and width % 16 == 0 and video[0].size == (width, height)
        frames = np.stack([np.asarray(v, np.float32) / 255.0 for v in video])
        return SimpleNamespace(frames=frames[None])


@pytest.fixture(scope="module")
def tiny_pipe():
    from editing.testing import tiny_wan_vace_pipeline

    return tiny_wan_vace_pipeline()


def _clip(T, H, W, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    masks = np.zeros((T, H, W), bool)
    masks[:, H // 4: 3 * H // 4, W // 4: 3 * W // 4] = True
    return frames, masks


def test_tiny_wan_vace_end_to_end_odd_sizes_and_mask_reaches_pipeline(tiny_pipe):
    frames, masks = _clip(11, 37, 53)
    spy = Spy(tiny_pipe)
    r = edit_video(frames, masks=masks, editor="diffusion", prompt="a red car", pipeline=spy,
                   options={**FAST, "window": 5, "overlap": 2, "max_area": 48 * 48})
    assert r.frames.shape == frames.shape and r.editor == "diffusion"
    outside = ~r.conditioned.region
    assert np.array_equal(r.frames[outside], frames[outside])
    assert not np.array_equal(r.frames[masks], frames[masks])
    assert len(spy.calls) == 3  # windows (0,5) (3,8) (6,11)
    for call in spy.calls:
        assert call["num_frames"] % 4 == 1 and call["height"] % 16 == 0 and call["width"] % 16 == 0
        assert call["prompt"] == "a red car"
        m = np.stack([np.asarray(im) for im in call["mask"]])
        assert call["mask"][0].mode == "L" and set(np.unique(m)) == {0, 255}
        white = (m == 255).mean()  # the object region, white = regenerate; the rest (and the padding) black
        assert 0.15 < white < 0.6
        assert (m[:, -1, :] == 0).all() or call["height"] * 53 == 48 * call["width"]


def test_tiny_wan_vace_seed_is_reproducible(tiny_pipe):
    frames, masks = _clip(9, 32, 32, seed=1)
    opts = {**FAST, "seed": 7}
    a = edit_video(frames, masks=masks, editor="diffusion", prompt="blue", pipeline=tiny_pipe, options=opts).frames
    b = edit_video(frames, masks=masks, editor="diffusion", prompt="blue", pipeline=tiny_pipe, options=opts).frames
    assert np.array_equal(a, b)


@pytest.mark.parametrize("T,H,W,window,overlap", [(11, 37, 53, 5, 2), (23, 40, 48, 9, 4), (6, 33, 31, 81, 16),
                                                  (1, 20, 24, 81, 16)])
def test_windows_blend_to_exactly_one_cover(T, H, W, window, overlap):
    """An identity pipeline proves each frame is covered and blended with weights summing to one (a frame
    counted twice would come back twice as bright, a missed one black)."""
    frames, masks = _clip(T, H, W)
    pipe = IdentityVideoPipeline()
    r = edit_video(frames, masks=masks, editor="diffusion", prompt="x", pipeline=pipe,
                   options={"window": window, "overlap": overlap, "max_area": 10**6, "crop": False})
    assert r.frames.shape == frames.shape
    assert np.abs(r.frames.astype(int) - frames.astype(int)).max() <= 1
    covered = sum(c["num_frames"] for c in pipe.calls)
    assert covered >= T


def test_small_object_is_edited_in_an_upscaled_crop():
    T, H, W = 5, 96, 128
    frames = np.random.default_rng(2).integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    frames = np.ascontiguousarray(np.repeat(np.repeat(frames[:, ::4, ::4], 4, 1), 4, 2))  # smooth enough to resize
    masks = np.zeros((T, H, W), bool)
    masks[:, 40:52, 60:72] = True
    pipe = IdentityVideoPipeline()
    r = edit_video(frames, masks=masks, editor="diffusion", prompt="x", pipeline=pipe,
                   options={"max_area": 96 * 128, "crop_below": 0.3})
    call = pipe.calls[0]
    white = np.asarray(call["mask"][0]) > 0
    assert white.mean() > 4 * masks[0].mean()        # the object fills much more of what the pipeline sees
    assert call["height"] * call["width"] >= 0.8 * 96 * 128
    assert np.array_equal(r.frames[~r.conditioned.region], frames[~r.conditioned.region])


def test_sd_inpaint_adapter_runs_per_frame():
    from PIL import Image

    class FakeInpaint:
        vae_scale_factor = 8

        def __init__(self):
            self.calls = []

        def __call__(self, prompt, image, mask_image, height, width, **kw):
            self.calls.append(dict(image=image, mask_image=mask_image, height=height, width=width))
            assert image.size == (width, height) and mask_image.mode == "L" and height % 8 == 0
            return SimpleNamespace(images=[Image.new("RGB", image.size, (0, 0, 255))])

    frames, masks = _clip(4, 30, 42)
    masks[3] = False  # a frame without the object (the last: smoothing keeps it empty) is not sent
    pipe = FakeInpaint()
    r = edit_video(frames, masks=masks, editor="sd_inpaint", prompt="blue", pipeline=pipe)
    assert len(pipe.calls) == 3
    assert (r.frames[0][masks[0]] == (0, 0, 255)).all()
    assert np.array_equal(r.frames[~r.conditioned.region], frames[~r.conditioned.region])


def test_diffusion_without_pipeline_and_bad_pipeline_path(tmp_path):
    frames, masks = _clip(5, 32, 32)
    with pytest.raises(ConfigError, match="pipeline="):
        edit_video(frames, masks=masks, editor="diffusion", prompt="x")
    with pytest.raises(MissingWeightsError, match="local directory"):
        edit_video(frames, masks=masks, editor="diffusion", prompt="x", pipeline=str(tmp_path / "nothing"))
