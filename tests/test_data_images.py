"""refCOCO (refer format, safe unpickling), ADE20K / COCO-Stuff class prompts, VideoInstruct conversations."""

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from training.data.images import RefCOCODataset, ade20k, cocostuff, safe_load_pickle
from training.data.video_instruct import VideoInstructDataset
from training.data import FrameSampling
from vglamm.errors import DataFormatError

H, W = 30, 40


def _refcoco(tmp_path):
    root = tmp_path / "refer_seg" / "refcoco"
    imgs = tmp_path / "refer_seg" / "images" / "mscoco" / "images" / "train2014"
    root.mkdir(parents=True)
    imgs.mkdir(parents=True)
    img = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(img).save(imgs / "COCO_train2014_000000000001.png")
    inst = {"images": [{"id": 1, "file_name": "COCO_train2014_000000000001.png", "height": H, "width": W}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": [[5, 5, 20, 5, 20, 15, 5, 15]]},
                            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": {"size": [H, W], "counts": [100, 50, H * W - 150]}}],
            "categories": [{"id": 1, "name": "thing"}]}
    (root / "instances.json").write_text(json.dumps(inst))
    refs = [{"ref_id": 0, "ann_id": 10, "image_id": 1, "split": "train", "category_id": 1,
             "sentences": [{"sent": "the left box", "raw": "The left box", "tokens": ["the"], "sent_id": 0},
                           {"sent": "square thing", "raw": "", "tokens": [], "sent_id": 1}]},
            {"ref_id": 1, "ann_id": 11, "image_id": 1, "split": "val", "category_id": 1,
             "sentences": [{"sent": "a stripe", "raw": "", "tokens": [], "sent_id": 2}]}]
    with open(root / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return root, img


def test_refcoco_refer_format(tmp_path):
    root, img = _refcoco(tmp_path)
    ds = RefCOCODataset(root, "train")
    assert ds.name == "refcoco" and len(ds) == 1
    s = ds[0]
    assert s.frames.shape == (1, H, W, 3)
    np.testing.assert_array_equal(s.frames[0], img)
    assert "the left box" in s.conversation[0]["content"] and s.conversation[1]["content"] == "It is [SEG]."
    assert s.masks.shape == (1, 1, H, W)
    assert s.masks[0, 0, 10, 10] and not s.masks[0, 0, 25, 30] and s.masks.sum() > 100
    val = RefCOCODataset(root, "val")[0]
    assert val.masks.sum() == 50  # uncompressed RLE: 50 foreground pixels


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_safe_unpickler_refuses_code(tmp_path):
    p = tmp_path / "refs(unc).p"
    p.write_bytes(pickle.dumps([{"x": _Evil()}]))
    with pytest.raises(DataFormatError, match="only builtin"):
        safe_load_pickle(p)
    p.write_bytes(pickle.dumps({"a": [1, 2.5, "s", (1, 2), {3}]}, protocol=2))
    assert safe_load_pickle(p) == {"a": [1, 2.5, "s", (1, 2), {3}]}


def _semseg(root_images, root_labels, labels_values):
    root_images.mkdir(parents=True, exist_ok=True)
    root_labels.mkdir(parents=True, exist_ok=True)
    for k, lab in enumerate(labels_values):
        Image.fromarray(np.full((H, W, 3), 40 * k, np.uint8)).save(root_images / f"img{k}.jpg")
        Image.fromarray(lab.astype(np.uint8)).save(root_labels / f"img{k}.png")


def test_ade20k_class_prompts(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    lab0 = np.zeros((H, W), np.uint8)
    lab0[:10] = 1  # wall
    lab0[10:25, :20] = 3  # sky: 300 px, wall 400 px, so wall is asked first
    lab1 = np.zeros((H, W), np.uint8)  # only "other": must be skipped
    _semseg(root / "images" / "training", root / "annotations" / "training", [lab0, lab1])
    (root / "objectInfo150.csv").write_text("Idx,Ratio,Train,Val,Name\n1,0.1,1,1,wall\n2,0.1,1,1,building;edifice\n"
                                            "3,0.1,1,1,sky\n")
    ds = ade20k(root, classes_per_sample=2)
    assert len(ds) == 2 and ds.class_names == ["wall", "building", "sky"]
    s = ds[0]
    assert s.conversation[0]["content"] == "What is wall in this image? Please respond with segmentation mask."
    assert s.conversation[2]["content"].startswith("What is sky in this image?")
    assert s.num_seg() == 2 and s.masks.shape == (2, 1, H, W)
    np.testing.assert_array_equal(s.masks[0, 0], lab0 == 1)
    np.testing.assert_array_equal(s.masks[1, 0], lab0 == 3)
    assert ds[1].meta["classes"] == ["wall", "sky"]  # falls through to the next image with a class


def test_cocostuff_class_prompts(tmp_path):
    lab = np.full((H, W), 255, np.uint8)
    lab[5:9, 5:9] = 0
    _semseg(tmp_path / "coco" / "train2017", tmp_path / "cocostuff" / "train2017", [lab])
    (tmp_path / "cocostuff" / "cocostuff_classes.txt").write_text("0: person\n1: bicycle\n")
    s = cocostuff(tmp_path / "cocostuff")[0]
    assert "person" in s.conversation[0]["content"] and s.masks.sum() == 16


def test_video_instruct_conversation_only(tmp_path):
    folder = tmp_path / "videos" / "v_abc"
    folder.mkdir(parents=True)
    for t in range(10):
        Image.fromarray(np.full((16, 24, 3), t * 20, np.uint8)).save(folder / f"{t:03d}.png")
    (tmp_path / "VideoInstruct100K.json").write_text(json.dumps(
        [{"video_id": "v_abc", "q": "What happens?", "a": "The screen gets brighter."}]))
    ds = VideoInstructDataset(tmp_path / "VideoInstruct100K.json", sampling=FrameSampling(num_frames=4))
    s = ds[0]
    assert s.conversation == [{"role": "user", "content": "What happens?"},
                              {"role": "assistant", "content": "The screen gets brighter."}]
    assert s.masks.shape == (0, 4, 16, 24) and s.frames.shape == (4, 16, 24, 3)
    np.testing.assert_array_equal(s.frames[:, 0, 0, 0], s.frame_indices * 20)
    (tmp_path / "bad.json").write_text(json.dumps([{"video_id": "v", "q": "", "a": "x"}]))
    with pytest.raises(DataFormatError, match="record 0"):
        VideoInstructDataset(tmp_path / "bad.json")
