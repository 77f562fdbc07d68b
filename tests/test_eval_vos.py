"""J, F, DAVIS statistics and protocols: hand-made cases and the real DAVIS sample."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from vglamm.errors import MaskError
from vglamm.evaluation import boundary_f, region_similarity
from vglamm.evaluation.vos import (
    _f_from_counts,
    boundary_tolerance,
    db_statistics,
    disk,
    evaluate_sequence,
    evaluate_vos,
    seg2bmap,
    split_label_map,
)

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016-sample"


def _box(T, H, W, y0, y1, x0, x1):
    m = np.zeros((T, H, W), bool)
    m[:, y0:y1, x0:x1] = True
    return m


# ---------------------------------------------------------------- J
def test_j_hand_computed_and_edge_cases():
    gt = _box(1, 10, 10, 0, 4, 0, 4)  # 16 px
    pred = _box(1, 10, 10, 0, 4, 2, 6)  # 16 px, overlap 8
    assert region_similarity(gt, pred)[0] == pytest.approx(8 / 24)
    empty = np.zeros_like(gt)
    assert region_similarity(empty, empty)[0] == 1.0  # empty union
    assert region_similarity(gt, empty)[0] == 0.0
    assert region_similarity(empty, gt)[0] == 0.0


def test_j_void_pixels_are_excluded():
    gt = _box(1, 10, 10, 0, 4, 0, 4)
    pred = _box(1, 10, 10, 0, 4, 2, 6)
    void = _box(1, 10, 10, 0, 10, 4, 10)  # hides the 8 px of pred outside gt
    assert region_similarity(gt, pred, void)[0] == pytest.approx(8 / 16)
    assert region_similarity(gt, gt & ~void, void)[0] == 1.0


def test_j_shape_mismatch_is_a_mask_error():
    with pytest.raises(MaskError, match="differ in shape"):
        region_similarity(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))


# ---------------------------------------------------------------- F building blocks
def test_disk_matches_skimage_definition():
    d = disk(2)
    assert d.shape == (5, 5) and d.dtype == np.uint8
    expected = np.array([[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(d, expected)
    assert boundary_tolerance(480, 854) == 8


def test_seg2bmap_marks_pixels_before_each_transition():
    seg = np.zeros((5, 5), bool)
    seg[1:3, 1:3] = True
    b = seg2bmap(seg)
    expected = np.zeros((5, 5), bool)
    # differs from E, S or SE neighbour: the square plus the row above-left corner pixel row/col before it
    expected[0, 0] = True  # SE neighbour (1,1) is fg
    expected[0, 1:3] = True
    expected[1:3, 0] = True
    expected[1:3, 1:3] = True
    expected[2, 1] = expected[2, 2] = True
    expected[1, 1] = False  # all of E, S, SE are fg
    np.testing.assert_array_equal(b, expected)


def test_f_edge_cases_follow_the_toolkit():
    assert _f_from_counts(0, 0, 0, 0) == 1.0
    assert _f_from_counts(0, 5, 0, 0) == 0.0  # P=1, R=0
    assert _f_from_counts(5, 0, 0, 0) == 0.0  # P=0, R=1
    assert _f_from_counts(4, 4, 2, 4) == pytest.approx(2 * 0.5 * 1 / 1.5)
    gt = _box(1, 40, 40, 10, 20, 10, 20)
    empty = np.zeros_like(gt)
    assert boundary_f(empty, empty)[0] == 1.0
    assert boundary_f(gt, empty)[0] == 0.0
    assert boundary_f(empty, gt)[0] == 0.0
    assert boundary_f(gt, gt)[0] == 1.0


def test_f_one_pixel_shift_within_tolerance_is_perfect_but_j_is_not():
    gt = _box(1, 60, 60, 20, 40, 20, 40)
    shifted = np.roll(gt, 1, axis=2)
    assert boundary_f(gt, shifted)[0] == 1.0  # tolerance ceil(0.008*85)=1 px
    assert region_similarity(gt, shifted)[0] == pytest.approx(380 / 420)
    far = np.roll(gt, 5, axis=2)
    assert boundary_f(gt, far)[0] < 1.0


def _full_frame_f(g, p, r):
    """The definition computed on the whole frame, no crop: the reference for the cropped fast path."""
    k = disk(r)
    gb, pb = seg2bmap(g), seg2bmap(p)
    gd, pd = cv2.dilate(gb.astype(np.uint8), k) > 0, cv2.dilate(pb.astype(np.uint8), k) > 0
    return _f_from_counts(pb.sum(), gb.sum(), (pb & gd).sum(), (gb & pd).sum())


def test_cropped_f_equals_full_frame_definition_on_random_blobs():
    rng = np.random.default_rng(0)
    H, W = 70, 90
    r = boundary_tolerance(H, W)
    for _ in range(12):
        g = cv2.dilate((rng.random((H, W)) > 0.995).astype(np.uint8), disk(4)) > 0
        p = cv2.dilate((rng.random((H, W)) > 0.995).astype(np.uint8), disk(3)) > 0
        # masks touching the image border exercise seg2bmap's last-row/column rule
        g[-3:, 10:30] = True
        p[:, -2:] = rng.random() > 0.5
        assert boundary_f(g, p)[0] == pytest.approx(_full_frame_f(g, p, r))
        void = np.zeros((H, W), bool)
        void[:, :20] = True
        assert boundary_f(g, p, void)[0] == pytest.approx(_full_frame_f(g & ~void, p & ~void, r))


# ---------------------------------------------------------------- statistics
def test_db_statistics_recall_and_decay_on_known_sequence():
    v = np.array([1.0, 1.0, 0.9, 0.8, 0.6, 0.5, 0.4, 0.2, 0.0])  # 9 frames: bins [0:3],[2:5],[4:7],[6:9]
    mean, recall, decay = db_statistics(v)
    assert mean == pytest.approx(v.mean())
    assert recall == pytest.approx(5 / 9)  # strictly > 0.5
    assert decay == pytest.approx(np.mean([1.0, 1.0, 0.9]) - np.mean([0.4, 0.2, 0.0]))
    assert db_statistics(np.ones(5))[2] == 0.0


# ---------------------------------------------------------------- protocols
def _two_objects(T=5, H=40, W=60):
    a = _box(T, H, W, 5, 20, 5, 20)
    b = _box(T, H, W, 22, 38, 30, 55)
    return np.stack([a, b])


def test_unsupervised_matching_undoes_swapped_order_and_ignores_extra_predictions():
    gt = _two_objects()
    noise = _box(5, 40, 60, 0, 3, 0, 3)
    pred = np.stack([noise, gt[1], gt[0]])  # swapped and one extra
    s = evaluate_sequence(gt, pred, protocol="unsupervised")
    assert s.assignment == [2, 1]
    assert np.all(s.j == 1.0) and np.all(s.f == 1.0)
    # the semi-supervised protocol takes ids as given: swapped objects score 0
    semi = evaluate_sequence(gt, pred[1:], protocol="semi-supervised")
    assert semi.j.shape == (2, 3)  # first and last frame skipped
    assert np.all(semi.j == 0.0)


def test_unsupervised_unmatched_ground_truth_scores_zero_and_too_many_proposals_fail():
    gt = _two_objects()
    s = evaluate_sequence(gt, gt[:1], protocol="unsupervised")
    assert s.assignment == [0, -1]
    assert np.all(s.j[1] == 0.0) and np.all(s.f[1] == 0.0)
    res = evaluate_vos([("seq", gt, gt[:1])])
    assert res["J-Mean"] == pytest.approx(0.5) and res["J&F-Mean"] == pytest.approx(0.5)
    assert set(res["per_object"]) == {"seq_1", "seq_2"}
    with pytest.raises(MaskError, match="at most 20"):
        evaluate_sequence(gt, np.zeros((21, 5, 40, 60), bool))


def test_split_label_map_uses_first_frame_ids_and_void():
    lab = np.zeros((2, 4, 4), np.uint8)
    lab[:, 0, 0] = 1
    lab[:, 1, 1] = 2
    lab[:, 3, 3] = 255
    objs, void = split_label_map(lab)
    assert objs.shape == (2, 2, 4, 4) and objs[1, :, 1, 1].all() and void[:, 3, 3].all()


# ---------------------------------------------------------------- real DAVIS sample
def _load_davis(seq, step=4):
    files = sorted((DAVIS / "Annotations" / "480p" / seq).glob("*.png"))[::step]
    return np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 0 for f in files])


@pytest.mark.skipif(not DAVIS.exists(), reason="shared DAVIS sample not found beside the repo")
def test_davis_sample_gt_vs_perturbed_versions():
    sequences = {s: _load_davis(s) for s in ("car-shadow", "motocross-jump")}
    for gt in sequences.values():
        assert np.all(region_similarity(gt, gt) == 1.0) and np.all(boundary_f(gt, gt) == 1.0)
        k = disk(3)
        eroded = np.stack([cv2.erode(m.astype(np.uint8), k) > 0 for m in gt])
        shifted = np.roll(gt, 20, axis=2)
        shifted_more = np.roll(gt, 60, axis=2)
        emptied = gt.copy()
        emptied[::2] = False
        j_er, f_er = region_similarity(gt, eroded).mean(), boundary_f(gt, eroded).mean()
        j_sh, f_sh = region_similarity(gt, shifted).mean(), boundary_f(gt, shifted).mean()
        j_sm, f_sm = region_similarity(gt, shifted_more).mean(), boundary_f(gt, shifted_more).mean()
        assert 1.0 > j_er > j_sh > j_sm
        assert 1.0 > f_er > f_sh > f_sm
        assert f_er > 0.9  # a 3 px erosion stays inside the 8 px tolerance for most boundary pixels
        j_em = region_similarity(gt, emptied)
        assert np.all(j_em[::2] == 0.0) and np.all(j_em[1::2] == 1.0)
    res = evaluate_vos([(s, gt[None], gt[None]) for s, gt in sequences.items()])
    assert res["J-Mean"] == 1.0 and res["F-Mean"] == 1.0 and res["J-Decay"] == 0.0


def test_unsupervised_cached_boundaries_equal_direct_per_pair_scores():
    rng = np.random.default_rng(1)
    T, H, W = 4, 50, 70
    blobs = [np.stack([cv2.dilate((rng.random((H, W)) > 0.997).astype(np.uint8), disk(5)) > 0 for _ in range(T)])
             for _ in range(5)]
    gt, pred = np.stack(blobs[:2]), np.stack(blobs[1:])
    void = np.zeros((T, H, W), bool)
    void[:, :, :8] = True
    s = evaluate_sequence(gt, pred, void=void)
    for i, k in enumerate(s.assignment):
        np.testing.assert_allclose(s.j[i], region_similarity(gt[i], pred[k], void))
        np.testing.assert_allclose(s.f[i], boundary_f(gt[i], pred[k], void))
    assert s.assignment[1] == 0  # gt object 1 is pred object 0
