"""Mask conditioning, compositing and the diffusion editor's planning (windows, sizes)."""

import numpy as np
import pytest

from editing.compositing import composite
from editing.conditioning import MaskConditioningConfig, condition_masks, temporal_smooth, validate_masks
from editing.editors.diffusion import DiffusionOptions, plan_space, plan_windows, round_to_4k1, window_weights
from vglamm.errors import MaskError


def _blob(T=5, H=40, W=50):
    m = np.zeros((T, H, W), bool)
    m[:, 10:30, 15:35] = True
    return m


def test_conditioning_removes_specks_fills_holes_and_dilates():
    m = _blob()
    m[:, 2, 2] = True            # a speck
    m[:, 20, 25] = False         # a pinhole
    c = condition_masks(m, MaskConditioningConfig(dilate=3, feather=2, temporal_window=1))
    assert not c.target[:, 2, 2].any() and c.target[:, 20, 25].all()
    assert (c.region >= c.target).all() and c.region.sum() > c.target.sum()
    # alpha: exactly 1 on the object, exactly 0 outside the region, a ramp in between
    assert (c.alpha[c.target] == 1).all() and (c.alpha[~c.region] == 0).all()
    band = c.region & (c.alpha < 1)
    assert band.any() and (c.alpha[band] > 0).all()


def test_temporal_smoothing_removes_one_frame_flicker():
    m = _blob(T=7)
    flick = m.copy()
    flick[3, 0:5, 0:5] = True    # appears for one frame only
    flick[4, 10:30, 15:20] = False  # part of the object drops out for one frame
    s = temporal_smooth(flick, 3)
    assert not s[3, 0:5, 0:5].any() and s[4, 10:30, 15:20].all()


def test_inverted_masks_protect_the_object():
    c = condition_masks(_blob()).inverted()
    obj = condition_masks(_blob()).target
    assert (c.alpha[obj] == 0).all() and (c.alpha[~obj].min() >= 0) and c.alpha.max() == 1


def test_validate_masks_errors():
    with pytest.raises(MaskError, match="does not match"):
        validate_masks(np.ones((4, 10, 10), bool), (5, 10, 10, 3))
    with pytest.raises(MaskError, match="empty"):
        validate_masks(np.zeros((5, 10, 10), bool), (5, 10, 10, 3))
    assert validate_masks(np.full((5, 10, 10), 255, np.uint8), (5, 10, 10, 3)).dtype == bool


def test_composite_is_exact_outside_alpha():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    edit = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    alpha = np.zeros((3, 20, 20), np.float32)
    alpha[:, 5:10, 5:10] = 1
    alpha[:, 10:12, 5:10] = 0.5
    out = composite(src, edit, alpha)
    assert np.array_equal(out[alpha == 0], src[alpha == 0])
    assert np.array_equal(out[alpha == 1], edit[alpha == 1])


@pytest.mark.parametrize("T,window,overlap", [(1, 81, 16), (9, 81, 16), (81, 81, 16), (82, 81, 16), (200, 81, 16),
                                              (17, 5, 2), (23, 9, 4), (10, 5, 0)])
def test_windows_cover_every_frame_and_weights_sum_to_one(T, window, overlap):
    windows = plan_windows(T, window, overlap)
    weights = window_weights(windows, T)
    total, cover = np.zeros(T), np.zeros(T, int)
    for (s, e), w in zip(windows, weights):
        assert e - s <= window and len(w) == e - s
        total[s:e] += w
        cover[s:e] += 1
    assert (cover >= 1).all() and windows[0][0] == 0 and windows[-1][1] == T
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    for (s, e), (s2, _) in zip(windows, windows[1:]):
        assert e - s2 >= min(overlap, window - 1)   # consecutive windows share the overlap


def test_round_to_4k1():
    assert [round_to_4k1(n) for n in (1, 2, 5, 6, 9, 80, 81)] == [1, 5, 5, 9, 9, 81, 81]


def test_spatial_plan_pads_to_multiple_and_crops_small_objects():
    region = np.zeros((3, 270, 481), bool)
    region[:, 100:200, 50:450] = True  # large: whole frame, no upscaling
    plan = plan_space(region, DiffusionOptions(max_area=480 * 832), 16)
    assert plan.box == (0, 270, 0, 481) and plan.size == (270, 481) and plan.padded == (272, 496)
    small = np.zeros((3, 270, 481), bool)
    small[:, 120:140, 200:230] = True  # small: a crop around it, upscaled to the working area
    plan = plan_space(small, DiffusionOptions(max_area=256 * 256), 16)
    y0, y1, x0, x1 = plan.box
    assert y0 <= 120 and y1 >= 140 and x0 <= 200 and x1 >= 230 and (y1 - y0) * (x1 - x0) < 270 * 481 / 2
    assert plan.size[0] > y1 - y0 and all(p % 16 == 0 for p in plan.padded)
