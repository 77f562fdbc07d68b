import json

import numpy as np
import pytest
from PIL import Image

from training.data import FrameSampling, select_frames
from training.data.video_gcg import (VideoGCGDataset, gcg_clip, read_video_gcg, render_gcg_caption,
                                     write_video_gcg)
from vglamm.errors import DataFormatError

H, W, T = 24, 32, 7


def _write_clip(root, name, t=T, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "JPEGImages" / name
    folder.mkdir(parents=True)
    names = []
    for k in range(t):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"{k:05d}.png")
        names.append(f"{name}/{k:05d}.png")
    return names


def _masks():
    dog = np.zeros((T, H, W), bool)
    dog[:, 2:10, 3:12] = True
    ball = np.zeros((T, H, W), bool)
    ball[5, 15:20, 20:30] = True  # visible in one frame only: frame sampling must keep it
    return {1: dog, 2: ball}


def test_gcg_write_read_load_round_trip(tmp_path):
    names = _write_clip(tmp_path, "vid0")
    masks = _masks()
    video, anns = gcg_clip(7, names, "[A brown dog](1) chases [a ball](2). The end.", masks)
    assert video.dense_cap.caption == "A brown dog chases a ball. The end."
    out = write_video_gcg(tmp_path / "train.json", [video], anns)
    videos2, anns2 = read_video_gcg(out)
    assert videos2[0] == video and anns2 == anns

    ds = VideoGCGDataset(out, frames_root=tmp_path / "JPEGImages", sampling=FrameSampling(num_frames=3))
    assert len(ds) == 1 and ds.records()[0].id == 7
    s = ds[0]
    ans = s.conversation[1]["content"]
    assert ans == "<p> A brown dog </p> [SEG] chases <p> a ball </p> [SEG]. The end."
    assert s.conversation[0]["role"] == "user" and "segmentation masks" in s.conversation[0]["content"]
    assert s.num_seg() == s.masks.shape[0] == 2
    assert 5 in s.frame_indices and len(s.frame_indices) == 3
    assert s.frames.shape == (3, H, W, 3) and s.frames.dtype == np.uint8
    np.testing.assert_array_equal(s.masks[0], masks[1][s.frame_indices])
    np.testing.assert_array_equal(s.masks[1], masks[2][s.frame_indices])
    expected = np.asarray(Image.open(tmp_path / "JPEGImages" / names[s.frame_indices[0]]))
    np.testing.assert_array_equal(s.frames[0], expected)


def test_gcg_multi_object_phrase_is_union(tmp_path):
    names = _write_clip(tmp_path, "v")
    masks = _masks()
    video, anns = gcg_clip(1, names, "[two things](1, 2) move", masks)
    write_video_gcg(tmp_path / "a.json", [video], anns)
    s = VideoGCGDataset(tmp_path / "a.json", tmp_path / "JPEGImages", FrameSampling(num_frames=0))[0]
    assert s.conversation[1]["content"] == "<p> two things </p> [SEG] move"
    np.testing.assert_array_equal(s.masks[0], masks[1] | masks[2])


def test_official_word_tags_render():
    from training.data.video_gcg import GCGDenseCaption
    dc = GCGDenseCaption("a man throws the frisbee to a dog", [1, 4, 7], [3, 4, 5])
    text, ids = render_gcg_caption(dc)
    assert text == "a <p> man </p> [SEG] throws the <p> frisbee </p> [SEG] to a <p> dog </p> [SEG]"
    assert ids == [[3], [4], [5]]


def test_gcg_bad_records_are_reported(tmp_path):
    names = _write_clip(tmp_path, "v")
    video, anns = gcg_clip(1, names, "[dog](1) and [ball](2)", _masks())
    with pytest.raises(DataFormatError, match="mask_id"):
        write_video_gcg(tmp_path / "x.json", [video], anns[:1])
    with pytest.raises(DataFormatError, match="object 3"):
        gcg_clip(1, names, "[cat](3)", _masks())
    doc = {"videos": [{"id": 1}], "annotations": []}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match=r"videos\[0\]"):
        read_video_gcg(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="line 1"):
        read_video_gcg(tmp_path / "broken.json")


def test_select_frames_covers_every_object_then_fills_uniformly():
    pres = np.zeros((3, 40), bool)
    pres[0, 0:2] = True
    pres[1, 37] = True
    pres[2, 20:22] = True
    idx = select_frames(40, FrameSampling(num_frames=6), pres)
    assert len(idx) == 6 and len(set(idx)) == 6
    assert all(pres[n, idx].any() for n in range(3))
    np.testing.assert_array_equal(select_frames(40, FrameSampling(num_frames=4)), select_frames(40, FrameSampling(4)))
    gaps = np.diff(select_frames(40, FrameSampling(num_frames=4)))
    assert gaps.min() >= 9  # uniform fill when nothing is forced
    rng_cfg = FrameSampling(num_frames=5, random=True)
    a = select_frames(40, rng_cfg, pres, np.random.default_rng(1))
    b = select_frames(40, rng_cfg, pres, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert all(pres[n, a].any() for n in range(3))
    assert len(select_frames(3, FrameSampling(num_frames=8))) == 3


def test_select_frames_stays_uniform_when_objects_are_everywhere():
    np.testing.assert_array_equal(select_frames(8, FrameSampling(num_frames=4), np.ones((2, 8), bool)), [1, 3, 5, 7])
