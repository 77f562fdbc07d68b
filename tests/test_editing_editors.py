"""Every no-weights editor through edit_video on small clips with given masks, and the real DAVIS sample."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from editing import available_editors, choose_editor, edit_video, register_editor
from editing.colors import rgb_to_lab
from vglamm.errors import ConfigError

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016-sample"
needs_davis = pytest.mark.skipif(not DAVIS.is_dir(), reason="shared DAVIS sample not found beside the repo")


def _clip(T=9, H=64, W=80, seed=0):
    """Textured background with a red square moving right: frames and its masks."""
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 1.5)
    frames = np.repeat(bg[None], T, axis=0)
    masks = np.zeros((T, H, W), bool)
    for t in range(T):
        x = 10 + 2 * t
        frames[t, 20:44, x:x + 24] = (200, 40, 40)
        frames[t, 20:44, x:x + 24, 0] -= np.arange(24, dtype=np.uint8)[:, None] * 3  # shading
        masks[t, 20:44, x:x + 24] = True
    return frames, masks


def _davis(name="car-shadow", n=6, step=6):
    imgs = sorted((DAVIS / "JPEGImages" / "480p" / name).glob("*.jpg"))[::step][:n]
    anns = sorted((DAVIS / "Annotations" / "480p" / name).glob("*.png"))[::step][:n]
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in imgs])
    masks = np.stack([np.asarray(Image.open(p)) > 0 for p in anns])
    return frames, masks


NO_WEIGHTS = [("recolor", {"color": "blue"}), ("blur", {}), ("pixelate", {}), ("remove", {}),
              ("background", {"mode": "color", "color": "green"}), ("background", {"mode": "blur"}),
              ("highlight", {})]


@pytest.mark.parametrize("editor,options", NO_WEIGHTS)
def test_no_weights_editor_changes_only_its_region(editor, options):
    frames, masks = _clip()
    r = edit_video(frames, masks=masks, editor=editor, options=options)
    out = r.frames
    assert out.shape == frames.shape and out.dtype == np.uint8 and r.editor == editor
    changed = np.any(out != frames, axis=-1)
    if editor in ("background", "highlight"):
        assert not changed[r.conditioned.target].any()          # the object itself is untouched
        assert changed[~r.conditioned.region].mean() > 0.5      # the background really changed
    else:
        assert not changed[~r.conditioned.region].any()         # exact outside the dilated mask
        assert changed[masks].mean() > 0.5                      # the object really changed
    assert set(r.timings) == {"load", "ground", "condition", "edit", "composite", "write"}


def test_remove_fills_from_frames_where_the_background_is_visible():
    frames, masks = _clip(T=13)
    bg = frames[0].copy()  # the square moves, so every pixel it covers is visible in some frame
    bg_truth = np.where(masks[-1][..., None], frames[0], frames[-1])  # background under the last square
    out = edit_video(frames, masks=masks, editor="remove", options={"align": False, "stabilize": 0}).frames
    hole = masks[-1] & ~masks[0]
    err = np.abs(out[-1][hole].astype(int) - bg_truth[hole].astype(int)).mean()
    assert err < 3, err
    assert bg.shape == frames[0].shape


def test_background_transparent_returns_rgba_matte():
    frames, masks = _clip()
    out = edit_video(frames, masks=masks, editor="background", options={"mode": "transparent"}).frames
    assert out.shape == frames.shape[:3] + (4,)
    assert (out[..., 3][masks] == 255).all() and (out[..., 3][~np.roll(masks, 8, axis=2) & ~masks].min() == 0)
    assert np.array_equal(out[..., :3], frames)


@needs_davis
def test_recolor_davis_car_turns_blue_and_keeps_lightness_structure():
    frames, masks = _davis()
    r = edit_video(frames, masks=masks, editor="recolor", prompt="make it blue")
    out = r.frames
    assert np.array_equal(out[~r.conditioned.region], frames[~r.conditioned.region])
    inside = masks & r.conditioned.target
    lab_in, lab_out = rgb_to_lab(frames[inside]), rgb_to_lab(out[inside])
    hue = np.degrees(np.arctan2(lab_out[:, 2], lab_out[:, 1]))
    blue_hue = np.degrees(np.arctan2(*rgb_to_lab(np.array([30, 80, 220], np.uint8))[[2, 1]]))
    chroma_in, chroma_out = np.hypot(*lab_in[:, 1:].T), np.hypot(*lab_out[:, 1:].T)
    coloured = chroma_out > 10
    assert coloured.mean() > 0.5 and chroma_out.mean() > chroma_in.mean() + 10
    assert np.median(np.abs((hue[coloured] - blue_hue + 180) % 360 - 180)) < 20
    # shading and texture: lightness is kept (out-of-gamut clipping moves it only a little)
    assert np.corrcoef(lab_in[:, 0], lab_out[:, 0])[0, 1] > 0.95
    assert np.abs(lab_in[:, 0] - lab_out[:, 0]).mean() < 6


@needs_davis
@pytest.mark.parametrize("editor", ["blur", "pixelate", "remove", "highlight"])
def test_davis_editors_keep_outside_pixels(editor):
    frames, masks = _davis("motocross-jump", n=4, step=10)
    frames, masks = frames[:, ::2, ::2].copy(), masks[:, ::2, ::2].copy()
    r = edit_video(frames, masks=masks, editor=editor)
    keep = ~r.conditioned.region if editor != "highlight" else r.conditioned.target
    assert np.array_equal(r.frames[keep], frames[keep])
    assert not np.array_equal(r.frames, frames)


@pytest.mark.parametrize("prompt,editor", [
    ("make it blue", "recolor"), ("turn the car red", "recolor"), ("paint it dark green", "recolor"),
    ("blur it", "blur"), ("pixelate the face", "pixelate"), ("remove it", "remove"), ("erase the dog", "remove"),
    ("blur the background", "background"), ("replace the background with white", "background"),
    ("highlight it", "highlight"), ("turn it into a blue dragon", "diffusion"), ("a corgi wearing sunglasses", "diffusion"),
])
def test_auto_choice(prompt, editor):
    assert choose_editor(prompt)[0] == editor


def test_auto_without_pipeline_for_generative_prompt_is_a_config_error():
    frames, masks = _clip()
    with pytest.raises(ConfigError, match="pipeline="):
        edit_video(frames, masks=masks, prompt="turn it into a golden retriever")


def test_unknown_editor_and_option():
    frames, masks = _clip()
    with pytest.raises(ConfigError, match="unknown editor"):
        edit_video(frames, masks=masks, editor="sparkle")
    with pytest.raises(ConfigError, match="valid options"):
        edit_video(frames, masks=masks, editor="blur", options={"radios": 3})
    with pytest.raises(ConfigError, match="colour"):
        edit_video(frames, masks=masks, editor="recolor", prompt="make it nicer")


def test_registered_editor_plugs_in():
    @register_editor("invert_test")
    def invert(frames, masks, prompt, options):
        """Invert colours."""
        return 255 - frames

    frames, masks = _clip()
    assert "invert_test" in available_editors()
    r = edit_video(frames, masks=masks, editor="invert_test")
    assert np.array_equal(r.frames[masks], 255 - frames[masks])
    assert np.array_equal(r.frames[~r.conditioned.region], frames[~r.conditioned.region])
