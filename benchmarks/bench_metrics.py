"""Time the VOS metrics on a DAVIS-sized set built from the shared DAVIS sample.

The two real sequences (80 frames, 854x480) are tiled to ``--frames`` frames (default 2,000, about DAVIS 2017 val)
and scored against perturbed predictions (shifted, eroded, some frames emptied), with the semi-supervised and the
unsupervised protocol (3 predicted objects per sequence, one of them noise).

    .venv/bin/python benchmarks/bench_metrics.py [--frames 2000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from vglamm.evaluation import boundary_f, evaluate_vos, region_similarity

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016-sample" / "Annotations" / "480p"


def load(seq: str) -> np.ndarray:
    return np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 0 for f in sorted((DAVIS / seq).glob("*.png"))])


def perturb(gt: np.ndarray, rng) -> np.ndarray:
    k = np.ones((5, 5), np.uint8)
    pred = np.stack([cv2.erode(m.astype(np.uint8), k) > 0 for m in np.roll(gt, 6, axis=2)])
    pred[rng.random(len(pred)) < 0.05] = False
    return pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--seq-len", type=int, default=70, help="frames per synthetic sequence (DAVIS val: ~67)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    base = np.concatenate([load("car-shadow"), load("motocross-jump")])
    reps = -(-args.frames // len(base))
    gt_all = np.concatenate([base] * reps)[: args.frames]
    pred_all = perturb(gt_all, rng)
    print(f"{len(gt_all)} frames at {gt_all.shape[2]}x{gt_all.shape[1]}")

    t = time.perf_counter()
    j = region_similarity(gt_all, pred_all)
    t_j = time.perf_counter() - t
    t = time.perf_counter()
    f = boundary_f(gt_all, pred_all)
    t_f = time.perf_counter() - t
    print(f"region_similarity: {t_j:.2f} s  (mean J {j.mean():.4f})")
    print(f"boundary_f:        {t_f:.2f} s  (mean F {f.mean():.4f})")

    seqs = []
    for i, s in enumerate(range(0, len(gt_all), args.seq_len)):
        g, p = gt_all[s:s + args.seq_len], pred_all[s:s + args.seq_len]
        noise = np.zeros_like(p)
        noise[:, 10:60, 10:90] = True
        seqs.append((f"seq{i:02d}", g[None], np.stack([noise, p, np.roll(p, 30, axis=1)])))
    for protocol in ("semi-supervised", "unsupervised"):
        t = time.perf_counter()
        if protocol == "semi-supervised":
            res = evaluate_vos([(n, g, p[1:2]) for n, g, p in seqs], protocol=protocol)
        else:
            res = evaluate_vos(seqs, protocol=protocol)
        dt = time.perf_counter() - t
        print(f"evaluate_vos {protocol:15s} {len(seqs)} sequences: {dt:.2f} s  "
              f"(J&F {res['J&F-Mean']:.4f}, J {res['J-Mean']:.4f}, F {res['F-Mean']:.4f})")


if __name__ == "__main__":
    main()
