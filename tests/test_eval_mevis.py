"""MeViS protocol: union of anno_ids as ground truth, per-expression means, prediction folders and the zip."""

import zipfile

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vglamm.errors import DataFormatError
from vglamm.evaluation import evaluate_mevis, mevis_ground_truth, write_mevis_submission
from vglamm.evaluation.mevis import read_prediction_folder


def _rle(m):
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


@pytest.fixture
def mevis():
    T, H, W = 3, 20, 30
    a = np.zeros((T, H, W), bool)
    a[:, 2:8, 2:8] = True
    b = np.zeros((T, H, W), bool)
    b[:, 10:18, 15:25] = True
    mask_dict = {"1": [_rle(x) for x in a], "2": [_rle(x) for x in b[:2]] + [None]}
    meta = {"videos": {"v1": {"frames": ["00000", "00005", "00010"],
                              "expressions": {"0": {"exp": "left thing", "anno_id": [1]},
                                              "1": {"exp": "both", "anno_id": [1, 2]}}}}}
    b[2] = False
    return meta, mask_dict, a, b


def test_ground_truth_is_union_of_anno_ids(mevis):
    meta, mask_dict, a, b = mevis
    gt = mevis_ground_truth(meta["videos"]["v1"], "1", mask_dict)
    np.testing.assert_array_equal(gt, a | b)
    with pytest.raises(DataFormatError, match="anno_id 9"):
        mevis_ground_truth({"frames": ["0"], "expressions": {"0": {"anno_id": [9]}}}, "0", mask_dict)


def test_scores_average_frames_then_expressions(mevis):
    meta, mask_dict, a, b = mevis
    # exp 0 perfect; exp 1 predicts only object a: J per frame = |a| / |a|b|
    preds = {("v1", "0"): a, ("v1", "1"): a}
    res = evaluate_mevis(meta, mask_dict, preds)
    j1 = np.mean([36 / (36 + 80), 36 / (36 + 80), 1.0])
    assert res["per_expression"]["v1_0"]["J"] == 1.0
    assert res["per_expression"]["v1_1"]["J"] == pytest.approx(j1)
    assert res["J"] == pytest.approx((1.0 + j1) / 2)
    assert res["J&F"] == pytest.approx((res["J"] + res["F"]) / 2)
    missing = evaluate_mevis(meta, mask_dict, {("v1", "0"): a})
    assert missing["num_missing"] == 1 and missing["J"] == pytest.approx(0.5)


def test_submission_zip_round_trips_through_prediction_folder(mevis, tmp_path):
    meta, mask_dict, a, b = mevis
    frames = meta["videos"]["v1"]["frames"]
    zpath = write_mevis_submission([("v1", "0", frames, a), ("v1", "1", frames, a | b)], tmp_path / "sub.zip")
    with zipfile.ZipFile(zpath) as zf:
        names = sorted(zf.namelist())
        assert names[0] == "v1/0/00000.png" and len(names) == 6
        zf.extractall(tmp_path / "pred")
    png = cv2.imread(str(tmp_path / "pred" / "v1" / "1" / "00005.png"), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(png)) == {0, 255}
    res = evaluate_mevis(meta, mask_dict, read_prediction_folder(tmp_path / "pred", meta))
    assert res["J"] == 1.0 and res["F"] == 1.0 and res["num_missing"] == 0
