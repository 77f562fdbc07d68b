"""Grounded conversation generation (GCG) metrics, as VideoGLaMM's ``eval_gcg_metrics.py`` defines them.

- mIoU: IoU of spatio-temporal (T,H,W) masks; predicted and ground-truth objects are paired greedily, one to one,
  by the highest remaining IoU while it is > 0; mean of the paired IoUs per video (0 if none), then over videos.
- Recall: greedy one-to-one matching by highest remaining IoU; the pair counts when IoU >= 0.5 and the phrases'
  embedding cosine >= 0.5, and matching stops at the first highest-IoU pair that fails either test (the
  reference's rule). Recall = true positives / number of ground-truth phrases over the whole dataset.
- Captions: METEOR, CIDEr and optionally CLAIR (see :mod:`vglamm.evaluation.captions`).

IoU of two empty masks is taken as 0 here (the reference divides 0 by 0, whose NaN ends its pairing loop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from vglamm.errors import MaskError
from vglamm.evaluation.phrase_encoders import PhraseEncoder, cosine_matrix

_TAG = re.compile(r"<[^>]*>")


@dataclass
class GCGRecord:
    """One video: ground-truth and predicted objects (each (T,H,W) bool, one per phrase) and captions."""

    video_id: str
    gt_masks: Sequence[np.ndarray]
    gt_phrases: Sequence[str]
    pred_masks: Sequence[np.ndarray]
    pred_phrases: Sequence[str]
    gt_caption: str = ""
    pred_caption: str = ""


def clean_caption(text: str) -> str:
    """Caption text without ``<p>``/``</p>`` (or any ``<...>``) tags and ``[SEG]`` tokens, spaces collapsed."""
    text = _TAG.sub("", text).replace("[SEG]", "")
    return re.sub(r"\s+", " ", text).strip()


def extract_phrases(text: str) -> list[str]:
    """The grounded phrases of an answer, in order: the contents of ``<p> ... </p>``."""
    return [p.strip() for p in re.findall(r"<p>(.*?)</p>", text, flags=re.S)]


def _stack(masks, name: str) -> np.ndarray:
    if len(masks) == 0:
        return np.zeros((0, 0), bool)
    arrs = [np.asarray(m) > 0 for m in masks]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise MaskError(f"{name}: objects of one video must share one (T,H,W) shape; got {sorted(shapes)}.")
    return np.stack(arrs).reshape(len(arrs), -1)


def mask_iou_matrix(a_masks, b_masks) -> np.ndarray:
    """(len(a), len(b)) IoU of spatio-temporal masks; 0 where both masks are empty."""
    a, b = _stack(a_masks, "first masks"), _stack(b_masks, "second masks")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    if a.shape[1] != b.shape[1]:
        raise MaskError(f"predicted and ground-truth masks differ in size ({a.shape[1]} vs {b.shape[1]} pixels): "
                        "give predictions on the ground truth's frames and at its resolution.")
    area_a = np.count_nonzero(a, axis=1)
    area_b = np.count_nonzero(b, axis=1)
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        inter = np.count_nonzero(a[i] & b, axis=1)
        union = area_a[i] + area_b - inter
        out[i] = np.divide(inter, union, out=np.zeros(len(b)), where=union > 0)
    return out


def _greedy_pairs(iou: np.ndarray, accept) -> list[tuple[int, int]]:
    iou = iou.copy()
    pairs = []
    while iou.size and len(pairs) < min(iou.shape):
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if not accept(i, j, iou[i, j]):
            break
        pairs.append((int(i), int(j)))
        iou[i, :] = -1.0  # removed: can never be the maximum again (every live IoU is >= 0)
        iou[:, j] = -1.0
    return pairs


def gcg_miou(pred_masks, gt_masks) -> float:
    """mIoU of one video: greedy one-to-one pairing by highest IoU while > 0, mean of the pairs' IoUs (0: none)."""
    iou = mask_iou_matrix(pred_masks, gt_masks)
    pairs = _greedy_pairs(iou, lambda i, j, v: v > 0)
    return float(np.mean([iou[i, j] for i, j in pairs])) if pairs else 0.0


def gcg_recall_matches(gt_masks, gt_phrases, pred_masks, pred_phrases, encoder: PhraseEncoder, *,
                       iou_threshold: float = 0.5, text_threshold: float = 0.5) -> list[tuple[int, int]]:
    """Matched ``(gt_index, pred_index)`` pairs of one video under the reference's greedy rule."""
    if len(gt_masks) != len(gt_phrases) or len(pred_masks) != len(pred_phrases):
        raise MaskError("give exactly one mask per phrase, for ground truth and prediction alike.")
    iou = mask_iou_matrix(gt_masks, pred_masks)
    if iou.size == 0:
        return []
    emb = encoder.encode(list(gt_phrases) + list(pred_phrases))
    sim = cosine_matrix(emb[:len(gt_phrases)], emb[len(gt_phrases):])
    # Small float error would flip an identical-phrase pair (cosine 1 - 1e-7) against a threshold of 1.
    return _greedy_pairs(iou, lambda i, j, v: v >= iou_threshold and sim[i, j] >= text_threshold - 1e-6)


def evaluate_gcg(records: Iterable[GCGRecord], *, encoder: PhraseEncoder | None = None,
                 captions: bool = True, clair=None, iou_threshold: float = 0.5, text_threshold: float = 0.5,
                 progress: bool = False) -> dict:
    """mIoU, Recall and caption metrics over a GCG set.

    ``encoder``: the phrase encoder for Recall (None: Recall skipped). ``captions``: METEOR and CIDEr (METEOR is
    skipped when Java is missing). ``clair``: a :class:`~vglamm.evaluation.captions.ClairJudge` or None (skipped).
    Skipped metrics are listed with the reason under ``"skipped"``.
    """
    from vglamm.evaluation.captions import caption_metrics, clair_score

    records = list(records)
    it = records
    if progress:
        from tqdm import tqdm
        it = tqdm(records, desc="GCG", unit="video")
    per_video, mious, tp, n_gt = {}, [], 0, 0
    for r in it:
        miou = gcg_miou(r.pred_masks, r.gt_masks)
        mious.append(miou)
        row = {"mIoU": miou, "num_gt": len(r.gt_phrases), "num_pred": len(r.pred_phrases)}
        if encoder is not None:
            matches = gcg_recall_matches(r.gt_masks, r.gt_phrases, r.pred_masks, r.pred_phrases, encoder,
                                         iou_threshold=iou_threshold, text_threshold=text_threshold)
            tp += len(matches)
            row["matches"] = matches
        n_gt += len(r.gt_phrases)
        per_video[r.video_id] = row

    out: dict = {"num_videos": len(records), "mIoU": float(np.mean(mious)) if mious else 0.0, "skipped": {}}
    if encoder is not None:
        out["Recall"] = tp / n_gt if n_gt else 0.0
        out["phrase_encoder"] = getattr(encoder, "name", type(encoder).__name__)
    else:
        out["skipped"]["Recall"] = "no phrase encoder given (use load_phrase_encoder('auto'|'minilm'|'bow'))"
    refs = [clean_caption(r.gt_caption) for r in records]
    cands = [clean_caption(r.pred_caption) for r in records]
    if captions and records:
        scores = caption_metrics(refs, cands)
        out["skipped"].update(scores.pop("skipped", {}))
        out.update({k: v for k, v in scores.items() if k != "per_video"})
    if clair is None:
        out["skipped"]["CLAIR"] = ("no CLAIR judge configured: give an OpenAI-compatible endpoint "
                                   "(--clair-url URL --clair-model NAME, key from $OPENAI_API_KEY)")
    elif records:
        values = [clair_score(c, g, clair)[0] for c, g in zip(cands, refs)]
        out["CLAIR"] = float(np.mean(values))
        for r, v in zip(records, values):
            per_video[r.video_id]["CLAIR"] = v
    out["per_video"] = per_video
    return out
