"""The custom JSONL format: loading good records and reporting every bad one with its line number."""

import json

import numpy as np
import pytest
from PIL import Image

from training.data import FrameSampling
from training.data._rle import encode_rle
from training.data.custom import CustomDataset, validate_custom
from vglamm.errors import DataFormatError

T, H, W = 6, 20, 28


def _setup(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    (tmp_path / "clip").mkdir()
    for t in range(T):
        Image.fromarray(frames[t]).save(tmp_path / "clip" / f"{t:03d}.png")
    cat = np.zeros((T, H, W), bool)
    cat[:, 3:9, 4:12] = True
    sofa = np.zeros((T, H, W), bool)
    sofa[2, 10:18, 10:25] = True
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "cat.json").write_text(json.dumps([encode_rle(m) for m in cat]))
    (tmp_path / "masks" / "sofa").mkdir()
    for t in range(T):
        Image.fromarray(sofa[t].astype(np.uint8) * 255).save(tmp_path / "masks" / "sofa" / f"{t:03d}.png")
    return frames, cat, sofa


def _conv(answer):
    return [{"role": "user", "content": "What is happening?"}, {"role": "assistant", "content": answer}]


GOOD = {"video": "clip", "conversation": _conv("<p> The cat </p> [SEG] jumps on <p> the sofa </p> [SEG]."),
        "masks": [{"rle_json": "masks/cat.json"}, {"png_dir": "masks/sofa"}]}


def _write(tmp_path, records):
    p = tmp_path / "data.jsonl"
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return p


def test_custom_good_records_load(tmp_path):
    frames, cat, sofa = _setup(tmp_path)
    inline = {"video": "clip", "conversation": _conv("Here: <p> cat </p> [SEG]."),
              "masks": [{"rles": [encode_rle(m) if m.any() else None for m in cat[[1, 3, 5]]]}], "frames": [5, 1, 3]}
    chat = {"video": "clip", "conversation": _conv("Nothing to ground.")}
    p = _write(tmp_path, [GOOD, inline, chat])
    report = validate_custom(p)
    assert report.ok and report.num_records == 3, report.summary()
    assert "OK" in report.summary()
    ds = CustomDataset(p, FrameSampling(num_frames=3))
    assert len(ds) == 3
    s = ds[0]
    assert s.num_seg() == s.masks.shape[0] == 2 and 2 in s.frame_indices
    np.testing.assert_array_equal(s.frames, frames[s.frame_indices])
    np.testing.assert_array_equal(s.masks[0], cat[s.frame_indices])
    np.testing.assert_array_equal(s.masks[1], sofa[s.frame_indices])
    s = ds[1]  # masks given for the listed frames only
    assert list(s.frame_indices) == [1, 3, 5]
    np.testing.assert_array_equal(s.masks[0], cat[[1, 3, 5]])
    assert ds[2].masks.shape == (0, 3, H, W)


def test_custom_every_error_is_reported_with_its_line(tmp_path):
    _setup(tmp_path)
    small = [encode_rle(np.zeros((10, 10), bool))] * T
    records = [
        GOOD,                                                                          # 1 ok
        "{this is not json",                                                           # 2
        {**GOOD, "video": "missing.mp4"},                                              # 3
        {**GOOD, "masks": [{"rle_json": "masks/cat.json"}]},                           # 4 [SEG] count
        {**GOOD, "masks": [{"rles": small}, {"png_dir": "masks/sofa"}]},               # 5 size
        {**GOOD, "conversation": []},                                                  # 6 empty
        {**GOOD, "conversation": [{"role": "gpt", "content": "hi"},
                                  {"role": "assistant", "content": "a [SEG] b [SEG]"}]},  # 7 role
        {**GOOD, "masks": [{"rle_json": "masks/nope.json"}, {"png_dir": "masks/sofa"}]},  # 8 missing mask file
        {**GOOD, "masks": [{"rles": small[:2]}, {"png_dir": "masks/sofa"}]},           # 9 frame count (+ size)
        {**GOOD, "frames": [0, 99]},                                                   # 10 frames out of range
    ]
    p = _write(tmp_path, records)
    report = validate_custom(p)
    assert not report.ok and report.num_records == 10
    assert report.bad_lines == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    by_line = {}
    for e in report.errors:
        by_line.setdefault(e.line, []).append((e.field, e.message))
    assert by_line[2][0][0] == "json"
    assert any(f == "video" and "does not exist" in m for f, m in by_line[3])
    assert any(f == "masks" and "2 [SEG]" in m and "1 masks" in m for f, m in by_line[4])
    assert any(f == "masks" and "10x10" in m for f, m in by_line[5])
    assert any(f == "conversation" and "non-empty" in m for f, m in by_line[6])
    assert any(f == "conversation" and "'gpt'" in m for f, m in by_line[7])
    assert any(f == "masks" and "nope.json" in m for f, m in by_line[8])
    assert any(f == "masks" and "2 frames" in m for f, m in by_line[9])
    assert any(f == "frames" for f, _ in by_line[10])
    summary = report.summary()
    assert "10 records, 1 valid, 9 with errors" in summary and "line 7: conversation" in summary

    with pytest.raises(DataFormatError, match="line 3"):
        CustomDataset(p)
    ds = CustomDataset(p, skip_invalid=True)
    assert len(ds) == 1 and ds.report.bad_lines == report.bad_lines
    assert ds[0].num_seg() == 2
