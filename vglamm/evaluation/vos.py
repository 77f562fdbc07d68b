"""Video object segmentation metrics: J (region similarity), F (boundary accuracy) and the DAVIS protocols.

The definitions follow the DAVIS 2017 evaluation toolkit (davisvideochallenge/davis2017-evaluation):

- J = |S ∩ G| / |S ∪ G| per frame, void pixels excluded, J = 1 when the union is empty.
- F compares 1-pixel boundary maps (``seg2bmap``: a pixel is boundary when it differs from its east, south or
  south-east neighbour), each dilated by a disk of radius ``ceil(0.008 * diagonal)``; precision / recall are the
  fractions of boundary pixels lying within the other map's dilation.
- Per object: Mean, Recall (fraction of frames scoring > 0.5) and Decay (mean of the first of 4 overlapping bins
  of frames minus mean of the last).
- Semi-supervised protocol: predicted object k is scored against ground-truth object k, first and last frame
  skipped. Unsupervised protocol: up to 20 predicted objects are matched to the ground-truth objects by the
  Hungarian algorithm on the sequence mean of (J + F) / 2; a ground-truth object left unmatched scores 0.

Speed: F works per frame on crops around each mask (the boundary and its dilation cannot leave them), so its cost
follows the object size, not the frame size; in the unsupervised protocol each object's boundaries are computed
once and every (prediction, truth) pair only looks its boundary pixels up in the other's dilation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from vglamm.errors import MaskError

VOID_LABEL = 255
MAX_PROPOSALS = 20


# --------------------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------------------
def _as_bool_stack(x, name: str, ndim: int, what: str) -> np.ndarray:
    """``x`` as a bool array of ``ndim`` dims (one fewer gets a leading axis of 1), else a MaskError naming ``what``."""
    a = np.asarray(x)
    if a.ndim == ndim - 1:
        a = a[None]
    if a.ndim != ndim:
        raise MaskError(f"{name} must be {what}; got shape {a.shape}.")
    return a if a.dtype == bool else a > 0


def _as_masks(x, name: str) -> np.ndarray:
    return _as_bool_stack(x, name, 3, "a (T,H,W) mask stack (or one (H,W) frame)")


def _check_pair(gt, pred, void):
    gt = _as_masks(gt, "gt")
    pred = _as_masks(pred, "pred")
    if gt.shape != pred.shape:
        raise MaskError(f"gt {gt.shape} and pred {pred.shape} differ in shape: resize the predictions to the "
                        "ground-truth frame size and give one mask per ground-truth frame.")
    if void is not None:
        void = _as_masks(void, "void")
        if void.shape != gt.shape:
            raise MaskError(f"void {void.shape} must have the shape of gt {gt.shape}.")
    return gt, pred, void


# --------------------------------------------------------------------------------------------------------------
# J
# --------------------------------------------------------------------------------------------------------------
def region_similarity(gt, pred, void=None) -> np.ndarray:
    """J per frame for (T,H,W) masks: IoU with ``void`` pixels excluded, 1.0 where the union is empty. -> (T,)"""
    gt, pred, void = _check_pair(gt, pred, void)
    T = gt.shape[0]
    j = np.ones(T, np.float64)
    # A loop of flat counts is several times faster than count_nonzero(axis=...) and needs no big temporaries.
    for t in range(T):
        g, p = gt[t], pred[t]
        if void is not None:
            keep = ~void[t]
            g, p = g & keep, p & keep
        inter = np.count_nonzero(g & p)
        union = np.count_nonzero(g) + np.count_nonzero(p) - inter
        if union:
            j[t] = inter / union
    return j


# --------------------------------------------------------------------------------------------------------------
# F
# --------------------------------------------------------------------------------------------------------------
def disk(radius: int) -> np.ndarray:
    """Disk structuring element of ``radius`` as skimage.morphology.disk builds it: x² + y² <= r², uint8."""
    r = int(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx * xx + yy * yy <= r * r).astype(np.uint8)


def boundary_tolerance(height: int, width: int, bound_th: float = 0.008) -> int:
    """The toolkit's boundary tolerance in pixels: ``bound_th`` itself when >= 1, else ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """1-pixel boundary map of a (H,W) mask, as the toolkit's ``_seg2bmap`` (no resizing).

    A pixel is boundary when it differs from its east, south or south-east neighbour; on the last row only the
    east neighbour counts, on the last column only the south one, and the bottom-right pixel is never boundary.
    """
    seg = np.asarray(seg, bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _f_from_counts(n_fg: int, n_gt: int, fg_match: int, gt_match: int) -> float:
    # The toolkit's edge cases: an empty prediction has precision 1, recall 0; an empty truth the reverse.
    if n_fg == 0 and n_gt == 0:
        precision = recall = 1.0
    elif n_fg == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision, recall = fg_match / n_fg, gt_match / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


@dataclass
class _Boundary:
    """The boundary of one mask frame: its pixels (image coordinates) and its dilation on a crop at (y0, x0)."""

    ys: np.ndarray
    xs: np.ndarray
    dilated: np.ndarray
    y0: int
    x0: int

    def count_within(self, other: "_Boundary | None") -> int:
        """How many of this boundary's pixels lie inside ``other``'s dilated boundary."""
        if other is None or self.ys.size == 0:
            return 0
        yy, xx = self.ys - other.y0, self.xs - other.x0
        h, w = other.dilated.shape
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        return int(np.count_nonzero(other.dilated[yy[inside], xx[inside]]))


def _frame_boundary(m: np.ndarray, r: int, kernel: np.ndarray) -> _Boundary | None:
    """Boundary of one (H,W) mask, computed on the crop around the mask (None: no boundary pixel).

    seg2bmap is local (a pixel and its E/S/SE neighbours), so on a crop reaching one pixel above/left of the mask
    and one background pixel below/right of it (or the image edge) it marks exactly the full-frame pixels; the
    dilation is computed on the boundary's box grown by r, clipped to the image as the full-frame one is.
    """
    H, W = m.shape
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, H)
    x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, W)
    ys, xs = np.nonzero(seg2bmap(m[y0:y1, x0:x1]))
    if ys.size == 0:  # e.g. a mask covering the whole frame
        return None
    ys, xs = ys + y0, xs + x0
    dy0, dy1 = max(int(ys.min()) - r, 0), min(int(ys.max()) + r + 1, H)
    dx0, dx1 = max(int(xs.min()) - r, 0), min(int(xs.max()) + r + 1, W)
    canvas = np.zeros((dy1 - dy0, dx1 - dx0), np.uint8)
    canvas[ys - dy0, xs - dx0] = 1
    return _Boundary(ys, xs, cv2.dilate(canvas, kernel), dy0, dx0)


def _pair_f(g: _Boundary | None, p: _Boundary | None) -> float:
    n_gt = 0 if g is None else g.ys.size
    n_fg = 0 if p is None else p.ys.size
    fg_match = p.count_within(g) if p is not None else 0
    gt_match = g.count_within(p) if g is not None else 0
    return _f_from_counts(n_fg, n_gt, fg_match, gt_match)


def _boundaries(masks: np.ndarray, void, r: int, kernel: np.ndarray) -> list[_Boundary | None]:
    out = []
    for t in range(masks.shape[0]):
        m = masks[t] if void is None else masks[t] & ~void[t]
        out.append(_frame_boundary(m, r, kernel))
    return out


def boundary_f(gt, pred, void=None, bound_th: float = 0.008) -> np.ndarray:
    """F (boundary F-measure) per frame for (T,H,W) masks, as the DAVIS 2017 toolkit computes it. -> (T,)"""
    gt, pred, void = _check_pair(gt, pred, void)
    T, H, W = gt.shape
    r = boundary_tolerance(H, W, bound_th)
    kernel = disk(r)
    out = np.empty(T, np.float64)
    for t in range(T):
        g, p = gt[t], pred[t]
        if void is not None:
            keep = ~void[t]
            g, p = g & keep, p & keep
        out[t] = _pair_f(_frame_boundary(g, r, kernel), _frame_boundary(p, r, kernel))
    return out


# --------------------------------------------------------------------------------------------------------------
# per-object statistics
# --------------------------------------------------------------------------------------------------------------
def db_statistics(values) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame scores, as the toolkit's ``db_statistics``.

    Recall counts frames scoring strictly above 0.5. Decay splits the frames into 4 bins whose edges are
    ``round(linspace(1, n, 5)) - 1``, each bin including both edges, and returns mean(first bin) - mean(last bin).
    (The toolkit casts the edges to uint8, which wraps past 255 frames; this uses plain integers.)
    """
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(np.nanmean(v))
    recall = float(np.mean(v[~np.isnan(v)] > 0.5)) if np.any(~np.isnan(v)) else float("nan")
    ids = (np.round(np.linspace(1, v.size, 5) + 1e-10) - 1).astype(np.int64)
    first = v[ids[0]:ids[1] + 1]
    last = v[ids[3]:ids[4] + 1]
    decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


# --------------------------------------------------------------------------------------------------------------
# protocols (one sequence)
# --------------------------------------------------------------------------------------------------------------
@dataclass
class SequenceScores:
    """Per-frame scores of one sequence: ``j`` and ``f`` are (N_gt, T') with T' the frames scored.

    ``assignment[i]`` is the index of the predicted object scored against ground-truth object i (-1: none, it
    scored 0 against an empty mask).
    """

    j: np.ndarray
    f: np.ndarray
    assignment: list[int] = field(default_factory=list)


def _as_objects(x, name: str) -> np.ndarray:
    return _as_bool_stack(x, name, 4, "an (N,T,H,W) stack of object masks")


def evaluate_sequence(gt, pred, *, protocol: str = "unsupervised", void=None,
                      max_proposals: int = MAX_PROPOSALS, bound_th: float = 0.008) -> SequenceScores:
    """Score one sequence: ``gt`` (N,T,H,W) and ``pred`` (M,T,H,W) bool object masks, ``void`` (T,H,W) or None.

    ``protocol="semi-supervised"``: pred object k against gt object k, first and last frame skipped; missing
    predicted objects are empty masks, extra ones are an error.
    ``protocol="unsupervised"``: Hungarian matching of up to ``max_proposals`` predicted objects on the sequence
    mean of (J+F)/2, all frames scored; unmatched ground-truth objects score against an empty mask.
    """
    gt = _as_objects(gt, "gt")
    pred = _as_objects(pred, "pred") if np.asarray(pred).size else np.zeros((0, *gt.shape[1:]), bool)
    if pred.shape[1:] != gt.shape[1:]:
        raise MaskError(f"predicted objects {pred.shape[1:]} and ground truth {gt.shape[1:]} must have the same "
                        "(T,H,W): give one mask per ground-truth frame at the ground-truth size.")
    n_gt, n_pred = gt.shape[0], pred.shape[0]
    empty = np.zeros(gt.shape[1:], bool)

    if protocol in ("semi-supervised", "semi"):
        if n_pred > n_gt:
            raise MaskError(f"{n_pred} predicted objects for {n_gt} ground-truth objects: in the semi-supervised "
                            "protocol object ids must match the ground truth's.")
        sl = slice(1, -1) if gt.shape[1] > 2 else slice(0, 0)
        js, fs = [], []
        for i in range(n_gt):
            p = pred[i, sl] if i < n_pred else empty[sl]
            v = None if void is None else np.asarray(void)[sl]
            js.append(region_similarity(gt[i, sl], p, v))
            fs.append(boundary_f(gt[i, sl], p, v, bound_th))
        T = gt[0, sl].shape[0] if n_gt else 0
        return SequenceScores(np.array(js).reshape(n_gt, T), np.array(fs).reshape(n_gt, T),
                              [i if i < n_pred else -1 for i in range(n_gt)])

    if protocol not in ("unsupervised", "unsup"):
        raise MaskError(f"unknown protocol {protocol!r}: use 'unsupervised' or 'semi-supervised'.")
    if n_pred > max_proposals:
        raise MaskError(f"{n_pred} predicted objects: the unsupervised protocol allows at most {max_proposals}. "
                        "Keep the most confident ones.")
    T, H, W = gt.shape[1:]
    r = boundary_tolerance(H, W, bound_th)
    kernel = disk(r)
    v = None if void is None else _as_masks(void, "void")
    if v is not None:  # void pixels count for nobody: remove them once
        gt, pred = gt & ~v, pred & ~v
    gt_b = [_boundaries(gt[i], None, r, kernel) for i in range(n_gt)]
    # The toolkit zero-pads missing proposals; an empty proposal scores J = F = 0 wherever the truth is non-empty.
    n_cand = max(n_pred, n_gt)
    J = np.zeros((n_cand, n_gt, T))
    F = np.zeros((n_cand, n_gt, T))
    for k in range(n_pred):
        pb = _boundaries(pred[k], None, r, kernel)
        for i in range(n_gt):
            J[k, i] = region_similarity(gt[i], pred[k])
            F[k, i] = [_pair_f(gt_b[i][t], pb[t]) for t in range(T)]
    for i in range(n_gt):
        gt_empty = ~gt[i].any(axis=(1, 2))
        J[n_pred:, i] = gt_empty
        F[n_pred:, i] = [_pair_f(gt_b[i][t], None) for t in range(T)]
    cost = (J.mean(axis=2) + F.mean(axis=2)) / 2 if T else np.zeros((n_cand, n_gt))
    rows, cols = linear_sum_assignment(-cost)
    j_out, f_out = np.zeros((n_gt, T)), np.zeros((n_gt, T))
    assignment = [-1] * n_gt
    for k, i in zip(rows, cols):
        j_out[i], f_out[i] = J[k, i], F[k, i]
        assignment[i] = int(k) if k < n_pred else -1
    return SequenceScores(j_out, f_out, assignment)


# --------------------------------------------------------------------------------------------------------------
# dataset level
# --------------------------------------------------------------------------------------------------------------
def summarize(per_object: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Dataset summary from per-object per-frame scores ``{name: (j (T,), f (T,))}``.

    Returns J/F Mean, Recall, Decay (means over objects), ``J&F`` = (J-Mean + F-Mean) / 2 and per-object values.
    """
    stats = {"J": [], "F": []}
    objects = {}
    for name, (j, f) in per_object.items():
        jm, jr, jd = db_statistics(j)
        fm, fr, fd = db_statistics(f)
        stats["J"].append((jm, jr, jd))
        stats["F"].append((fm, fr, fd))
        objects[name] = {"J": jm, "F": fm, "J&F": (jm + fm) / 2, "J-Recall": jr, "F-Recall": fr,
                         "J-Decay": jd, "F-Decay": fd}
    out: dict = {}
    for key in ("J", "F"):
        arr = np.array(stats[key], np.float64).reshape(-1, 3)
        for col, label in enumerate(("Mean", "Recall", "Decay")):
            out[f"{key}-{label}"] = float(np.nanmean(arr[:, col])) if arr.size else float("nan")
    out["J&F-Mean"] = (out["J-Mean"] + out["F-Mean"]) / 2
    out["num_objects"] = len(objects)
    out["per_object"] = objects
    return out


def evaluate_vos(sequences: Iterable, *, protocol: str = "unsupervised", max_proposals: int = MAX_PROPOSALS,
                 bound_th: float = 0.008, progress: bool = False) -> dict:
    """Score a set of sequences with a DAVIS protocol.

    ``sequences`` yields ``(name, gt (N,T,H,W), pred (M,T,H,W))`` or ``(name, gt, pred, void (T,H,W))``.
    Object i of sequence ``name`` is reported as ``f"{name}_{i+1}"`` (the toolkit's naming).
    Returns :func:`summarize`'s dict plus ``assignments`` (per sequence, the predicted index per gt object).
    """
    per_object, assignments = {}, {}
    it = sequences
    if progress:
        from tqdm import tqdm
        it = tqdm(sequences, desc=f"VOS ({protocol})", unit="seq")
    for item in it:
        if len(item) == 3:
            name, gt, pred = item
            void = None
        else:
            name, gt, pred, void = item
        scores = evaluate_sequence(gt, pred, protocol=protocol, void=void, max_proposals=max_proposals,
                                   bound_th=bound_th)
        for i in range(scores.j.shape[0]):
            per_object[f"{name}_{i + 1}"] = (scores.j[i], scores.f[i])
        assignments[name] = scores.assignment
    out = summarize(per_object)
    out["protocol"] = protocol
    out["assignments"] = assignments
    return out


def split_label_map(labels, num_objects: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(T,H,W) integer label maps (DAVIS palette PNG values) -> ((N,T,H,W) bool objects 1..N, (T,H,W) void).

    ``num_objects`` defaults to the largest id of the first frame, as the toolkit does for ground truth.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise MaskError(f"label maps must be (T,H,W); got {lab.shape}.")
    void = lab == VOID_LABEL
    ids = np.where(void, 0, lab)
    n = int(ids[0].max()) if num_objects is None else int(num_objects)
    objects = np.stack([ids == k for k in range(1, n + 1)]) if n else np.zeros((0, *lab.shape), bool)
    return objects, void
