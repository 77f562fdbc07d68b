"""MeViS, Ref-YouTube-VOS / Ref-DAVIS17 and [phrase](ids) GCG loaders on tiny fixtures in the real layouts."""

import json

import numpy as np
import pytest
from PIL import Image

from training.data import FrameSampling
from training.data.gcg_bracket import (BracketGCGDataset, MevisMasks, PaletteMasks, PngDirMasks,
                                       render_bracket_caption)
from training.data.mevis import MevisClip, MevisDataset, MevisExpression, write_mevis
from training.data.refer_vos import RefDAVIS17Dataset, RefYouTubeVOSDataset
from vglamm.errors import DataFormatError

T, H, W = 6, 24, 32


def _frames(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (T, H, W, 3), dtype=np.uint8)


def _objects():
    a = np.zeros((T, H, W), bool)
    a[:, 2:8, 2:10] = True
    b = np.zeros((T, H, W), bool)
    b[4, 12:20, 15:25] = True
    return {3: a, 5: b}


def _mevis(tmp_path):
    objs = _objects()
    clip = MevisClip("vidA", objs, [MevisExpression("the red car", [3]), MevisExpression("cars moving", [3, 5])],
                     frames=_frames())
    root = write_mevis(tmp_path / "mevis" / "train", [clip], image_ext=".png")
    return root, objs


def test_mevis_write_then_load(tmp_path):
    root, objs = _mevis(tmp_path)
    meta = json.loads((root / "meta_expressions.json").read_text())
    assert set(meta["videos"]["vidA"]["expressions"]) == {"0", "1"}
    assert meta["videos"]["vidA"]["expressions"]["1"]["obj_id"] == [3, 5]
    ds = MevisDataset(tmp_path / "mevis", split="train", sampling=FrameSampling(num_frames=3))
    assert len(ds) == 2 and [r.exp for r in ds.records()] == ["the red car", "cars moving"]
    s = ds[1]
    assert s.conversation[0]["content"] == "What is cars moving in this video? Please respond with segmentation masks."
    assert s.conversation[1]["content"] == "It is [SEG]."
    assert s.masks.shape == (1, 3, H, W)
    np.testing.assert_array_equal(s.masks[0], (objs[3] | objs[5])[s.frame_indices])
    np.testing.assert_array_equal(s.frames, _frames()[s.frame_indices])  # PNG frames are lossless
    with pytest.raises(DataFormatError, match="already holds"):
        write_mevis(root, [])


def test_mevis_missing_anno_is_reported(tmp_path):
    root, _ = _mevis(tmp_path)
    md = json.loads((root / "mask_dict.json").read_text())
    md.pop("1")
    (root / "mask_dict.json").write_text(json.dumps(md))
    with pytest.raises(DataFormatError, match="anno_id 1"):
        MevisDataset(root)


def _palette_png(path, labels):
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128] + [0] * (256 * 3 - 18))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _ytvos_layout(root, split):
    objs = {1: _objects()[3], 2: _objects()[5]}
    frames = _frames(1)
    names = [f"{k * 5:05d}" for k in range(T)]
    for t, n in enumerate(names):
        lab = np.zeros((H, W), np.uint8)
        lab[objs[1][t]] = 1
        lab[objs[2][t]] = 2
        _palette_png(root / split / "Annotations" / "v1" / f"{n}.png", lab)
        (root / split / "JPEGImages" / "v1").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frames[t]).save(root / split / "JPEGImages" / "v1" / f"{n}.jpg", quality=95)
    meta = {"videos": {"v1": {"frames": names, "expressions": {"0": {"exp": "a dog", "obj_id": "1"},
                                                                  "1": {"exp": "a small ball", "obj_id": "2"}}}}}
    (root / "meta_expressions" / split).mkdir(parents=True)
    (root / "meta_expressions" / split / "meta_expressions.json").write_text(json.dumps(meta))
    return objs, names


@pytest.mark.parametrize("cls,split", [(RefYouTubeVOSDataset, "train"), (RefDAVIS17Dataset, "valid")])
def test_refer_vos_palette_pngs(tmp_path, cls, split):
    objs, names = _ytvos_layout(tmp_path, split)
    ds = cls(tmp_path, sampling=FrameSampling(num_frames=2)) if split == "valid" else \
        cls(tmp_path, split, FrameSampling(num_frames=2))
    assert len(ds) == 2
    s = ds[1]
    assert "a small ball" in s.conversation[0]["content"] and s.num_seg() == 1
    assert 4 in s.frame_indices  # the ball is only visible in frame 4
    np.testing.assert_array_equal(s.masks[0], objs[2][s.frame_indices])
    assert s.frames.shape == (2, H, W, 3)


def test_bracket_caption_rendering():
    text, ids = render_bracket_caption("[A man](1) hands [the two cups](2, 3) to [a woman](4).")
    assert text == "<p> A man </p> [SEG] hands <p> the two cups </p> [SEG] to <p> a woman </p> [SEG]."
    assert ids == [[1], [2, 3], [4]]
    with pytest.raises(DataFormatError, match="not integers"):
        render_bracket_caption("[a man](x)")


def test_bracket_gcg_with_mevis_masks(tmp_path):
    root, objs = _mevis(tmp_path)
    caps = tmp_path / "mevis_gcg"
    caps.mkdir()
    (caps / "vidA.json").write_text(json.dumps({"caption": "[A red car](3) passes [two cars](3, 5)."}))
    ds = BracketGCGDataset(caps, MevisMasks(root), FrameSampling(num_frames=4), name="mevis_gcg")
    s = ds[0]
    assert s.conversation[1]["content"] == "<p> A red car </p> [SEG] passes <p> two cars </p> [SEG]."
    assert s.masks.shape[0] == s.num_seg() == 2
    np.testing.assert_array_equal(s.masks[0], objs[3][s.frame_indices])
    np.testing.assert_array_equal(s.masks[1], (objs[3] | objs[5])[s.frame_indices])


def test_bracket_gcg_with_palette_and_png_dirs(tmp_path):
    objs, names = _ytvos_layout(tmp_path / "ytvos", "train")
    (tmp_path / "caps.json").write_text(json.dumps({"v1": {"caption": "[a dog](1) and [a ball](2)"}}))
    s = BracketGCGDataset(tmp_path / "caps.json", PaletteMasks(tmp_path / "ytvos" / "train"),
                          FrameSampling(num_frames=0))[0]
    np.testing.assert_array_equal(s.masks[1], objs[2])

    # VidSTG / HC-STVG: <vid>/frames/*, <vid>/masks/<obj:03d>/<frame>.png, absent frames have no file
    base = tmp_path / "vidstg" / "train" / "clip9"
    for t in range(T):
        (base / "frames").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_frames()[t]).save(base / "frames" / f"{t:04d}.png")
        for o, m in objs.items():
            if m[t].any():
                (base / "masks" / f"{o:03d}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(m[t].astype(np.uint8) * 255).save(base / "masks" / f"{o:03d}" / f"{t:04d}.png")
    (tmp_path / "vcaps.json").write_text(json.dumps([{"video": "clip9", "caption": "[the ball](2) rolls"}]))
    s = BracketGCGDataset(tmp_path / "vcaps.json", PngDirMasks(tmp_path / "vidstg" / "train"),
                          FrameSampling(num_frames=2))[0]
    assert 4 in s.frame_indices
    np.testing.assert_array_equal(s.masks[0], objs[2][s.frame_indices])
    np.testing.assert_array_equal(s.frames, _frames()[s.frame_indices])
