"""Mask formats round-trip exactly; bad input raises MaskError."""

import json

import numpy as np
import pytest
from PIL import Image

from vglamm.errors import DataFormatError, MaskError
from vglamm.io import (davis_palette, decode_rle, draw_overlay, encode_rle, labels_to_objects, load_binary_pngs,
                       load_davis_pngs, load_rle_json, load_submission_pngs, load_video, masks_to_rles,
                       objects_to_labels, rles_to_masks, save_binary_pngs, save_davis_pngs, save_rle_json,
                       save_submission_pngs, write_overlay_video)


def random_masks(seed=0, t=5, h=13, w=17):
    m = np.random.default_rng(seed).random((t, h, w)) > 0.6
    m[1] = False  # an empty frame
    return m


def test_rle_round_trip_and_format():
    m = random_masks()
    rle = encode_rle(m[0])
    assert rle["size"] == [13, 17] and isinstance(rle["counts"], str)
    json.dumps(rle)
    assert np.array_equal(decode_rle(rle), m[0])
    assert np.array_equal(decode_rle({"size": rle["size"], "counts": rle["counts"].encode()}), m[0])
    rles = masks_to_rles(m)
    assert rles[1] is None and all(r is not None for i, r in enumerate(rles) if i != 1)
    assert np.array_equal(rles_to_masks(rles, (13, 17)), m)


def test_uncompressed_rle():
    # Column-major runs: 1 background pixel, 2 foreground, 3 background on a 2x3 image.
    mask = decode_rle({"size": [2, 3], "counts": [1, 2, 3]})
    assert mask.T.ravel().tolist() == [False, True, True, False, False, False]


def test_rle_json_multi_object(tmp_path):
    a, b = random_masks(1), random_masks(2)
    b[:] = False  # an object that is never visible
    path = save_rle_json(tmp_path / "m.json", {3: a, 7: b}, phrases={3: "the dog"}, video="v1",
                         frame_names=[f"{i:05d}" for i in range(5)])
    doc = json.loads(path.read_text())
    assert doc["size"] == [13, 17] and [o["id"] for o in doc["objects"]] == [3, 7]
    assert doc["objects"][1]["segmentations"] == [None] * 5
    loaded = load_rle_json(path)
    assert loaded["video"] == "v1" and loaded["size"] == (13, 17) and loaded["frame_names"][4] == "00004"
    (o3, o7) = loaded["objects"]
    assert (o3["id"], o3["phrase"], o7["phrase"]) == (3, "the dog", None)
    assert np.array_equal(o3["masks"], a) and np.array_equal(o7["masks"], b)
    # (N, T, H, W) arrays get ids 1..N; phrases as a list follow them.
    save_rle_json(tmp_path / "n.json", np.stack([a, b]), phrases=["x", "y"])
    assert [(o["id"], o["phrase"]) for o in load_rle_json(tmp_path / "n.json")["objects"]] == [(1, "x"), (2, "y")]


def test_davis_palette_generated():
    pal = davis_palette()
    assert pal.shape == (256, 3)
    assert pal[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert pal[255].tolist() == [224, 224, 192]


def test_davis_pngs_round_trip(tmp_path):
    labels = np.random.default_rng(3).integers(0, 4, (4, 9, 11)).astype(np.uint8)
    labels[0, 0, :3] = 255  # void
    labels[2] = 0
    paths = save_davis_pngs(tmp_path / "d", labels, frame_names=["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png", "d.png"]
    with Image.open(paths[0]) as im:
        assert im.mode == "P" and im.getpalette()[3:6] == [128, 0, 0]
    back, names = load_davis_pngs(tmp_path / "d", return_names=True)
    assert np.array_equal(back, labels) and names == ["a", "b", "c", "d"]
    objects = labels_to_objects(back)
    assert sorted(objects) == [1, 2, 3]  # 0 and void excluded
    assert np.array_equal(objects[2], labels == 2)


def test_objects_to_labels_overlap_policy(tmp_path):
    a = np.zeros((1, 4, 4), bool)
    b = np.zeros((1, 4, 4), bool)
    a[0, :2] = True
    b[0, 1:3] = True
    labels = objects_to_labels({1: a, 2: b})
    assert labels[0, :, 0].tolist() == [1, 2, 2, 0]  # higher id wins on overlap
    save_davis_pngs(tmp_path / "o", {5: a})
    assert np.array_equal(load_davis_pngs(tmp_path / "o"), a.astype(np.uint8) * 5)
    with pytest.raises(MaskError, match="1..254"):
        objects_to_labels({300: a})


def test_binary_and_submission_pngs(tmp_path):
    m = random_masks(4)
    save_binary_pngs(tmp_path / "b", m)
    with Image.open(tmp_path / "b" / "00000.png") as im:
        assert im.mode == "L" and set(np.unique(np.array(im))) <= {0, 255}
    assert np.array_equal(load_binary_pngs(tmp_path / "b"), m)
    paths = save_submission_pngs(tmp_path / "sub", "vid1", 0, m, frame_names=[f"{i:05d}" for i in range(5)])
    assert paths[0] == tmp_path / "sub" / "vid1" / "0" / "00000.png"
    assert np.array_equal(load_submission_pngs(tmp_path / "sub", "vid1", 0), m)


def test_overlay_video(tmp_path):
    frames = np.full((3, 40, 60, 3), 100, np.uint8)
    m = np.zeros((3, 40, 60), bool)
    m[:, 10:30, 20:50] = True
    drawn = draw_overlay(frames[0], [m[0]], ["a car"])
    assert not np.array_equal(drawn[15:25, 25:45], frames[0, 15:25, 25:45])  # tinted inside
    assert np.array_equal(drawn[35:, :10], frames[0, 35:, :10])  # untouched far away
    path = write_overlay_video(tmp_path / "ov.mp4", frames, [("a car", m)], fps=5)
    video = load_video(path)
    assert video.frames.shape == (3, 40, 60, 3) and video.fps == 5.0
    with pytest.raises(MaskError, match="video is"):
        write_overlay_video(tmp_path / "x.mp4", frames, [("a", m[:, :20])], fps=5)
    with pytest.raises(MaskError, match="frames"):
        write_overlay_video(tmp_path / "x.mp4", frames, [("a", m[:2])], fps=5)


def test_mask_errors(tmp_path):
    with pytest.raises(MaskError, match="bool"):
        masks_to_rles(np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(MaskError, match=r"\(T, H, W\)"):
        masks_to_rles(np.zeros((4, 4), bool))
    with pytest.raises(MaskError, match="video is"):
        rles_to_masks([encode_rle(np.ones((4, 4), bool))], (4, 5))
    with pytest.raises(MaskError, match="COCO RLE"):
        decode_rle({"counts": "abc"})
    with pytest.raises(MaskError, match="video is"):
        save_rle_json(tmp_path / "s.json", random_masks(), size=(10, 10))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataFormatError):
        load_rle_json(tmp_path / "bad.json")
    folder = tmp_path / "png"
    folder.mkdir()
    (folder / "00000.png").write_bytes(b"not a png")
    with pytest.raises(MaskError, match="cannot be read"):
        load_davis_pngs(folder)
    with pytest.raises(MaskError, match="cannot be read"):
        load_binary_pngs(folder)
    with pytest.raises(MaskError, match="does not exist"):
        load_binary_pngs(tmp_path / "missing")
    with pytest.raises(MaskError, match="frame names"):
        save_binary_pngs(tmp_path / "n", random_masks(), frame_names=["a"])
