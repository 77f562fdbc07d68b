"""The real DAVIS 2016 sample (car-shadow, 40 frames, 854x480) through the video and mask formats."""

from pathlib import Path

import numpy as np
import pytest

from vglamm.io import (labels_to_objects, load_binary_pngs, load_davis_pngs, load_rle_json, load_submission_pngs,
                       load_video, masks_to_rles, probe_video, rles_to_masks, save_binary_pngs, save_davis_pngs,
                       save_rle_json, save_submission_pngs, write_video)

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016-sample"
FRAMES = DAVIS / "JPEGImages" / "480p" / "car-shadow"
ANNOTATIONS = DAVIS / "Annotations" / "480p" / "car-shadow"

pytestmark = pytest.mark.skipif(not FRAMES.is_dir(), reason="DAVIS sample not found next to the repository")


@pytest.fixture(scope="module")
def frames():
    return load_video(FRAMES)


@pytest.fixture(scope="module")
def gt():
    return load_binary_pngs(ANNOTATIONS, return_names=True)


def test_frame_folder(frames):
    info = probe_video(FRAMES)
    assert (info.num_frames, info.size, info.fps) == (40, (480, 854), 24.0)
    assert frames.frames.shape == (40, 480, 854, 3) and frames.frame_indices.tolist() == list(range(40))


def test_encode_to_mp4_and_read_back(tmp_path, frames):
    path = write_video(tmp_path / "car-shadow.mp4", frames.frames, 24, preset="veryfast")
    info = probe_video(path)
    assert (info.num_frames, info.size, info.fps) == (40, (480, 854), 24.0)
    back = load_video(path)
    assert back.frames.shape == (40, 480, 854, 3)
    err = np.abs(back.frames.astype(np.int16) - frames.frames).mean()
    assert err < 3.0, f"mean abs pixel error {err:.2f} after H.264 crf 18"
    # 40 frames at 24 fps resampled to 4 fps: [0, 6, ..., 36]; 5 of those picked uniformly.
    sampled = load_video(path, fps=4, max_frames=5)
    assert sampled.frame_indices.tolist() == [0, 12, 18, 24, 36]
    assert np.abs(sampled.frames.astype(np.int16) - frames.frames[sampled.frame_indices]).mean() < 3.0


def test_masks_through_every_format(tmp_path, gt):
    masks, names = gt
    assert masks.shape == (40, 480, 854) and masks.dtype == bool and masks.any()
    assert np.array_equal(rles_to_masks(masks_to_rles(masks), (480, 854)), masks)

    save_rle_json(tmp_path / "car.json", {1: masks}, phrases=["car"], video="car-shadow", frame_names=names)
    loaded = load_rle_json(tmp_path / "car.json")
    assert loaded["objects"][0]["phrase"] == "car" and np.array_equal(loaded["objects"][0]["masks"], masks)

    save_davis_pngs(tmp_path / "davis", {1: masks}, frame_names=names)
    labels, back_names = load_davis_pngs(tmp_path / "davis", return_names=True)
    assert back_names == names and np.array_equal(labels_to_objects(labels)[1], masks)

    save_submission_pngs(tmp_path / "sub", "car-shadow", 0, masks, frame_names=names)
    assert np.array_equal(load_submission_pngs(tmp_path / "sub", "car-shadow", 0), masks)
    save_binary_pngs(tmp_path / "bin", masks, frame_names=names)
    assert np.array_equal(load_binary_pngs(tmp_path / "bin"), masks)
