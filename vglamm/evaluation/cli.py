"""`vglamm eval`: score predictions made elsewhere on a benchmark and write metrics JSON.

    vglamm eval refdavis --data DAVIS_ROOT --predictions PRED_DIR --out results/
    vglamm eval mevis    --data MEVIS_SPLIT_DIR --predictions PRED_DIR --out results/

Scoring a model directly (``--model``) is not implemented yet: run the model, write its masks, then use
``--predictions``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vglamm.errors import ConfigError, DataFormatError, MaskError
from vglamm.io.atomic import write_text_atomic


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score a model or predictions on a benchmark",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)

    d = sub.add_parser("refdavis", help="DAVIS-style J/F/J&F (Ref-DAVIS17: unsupervised protocol)")
    d.add_argument("--data", required=True, type=Path, help="DAVIS root with Annotations/<resolution>/<seq>/*.png")
    d.add_argument("--resolution", default="480p")
    d.add_argument("--protocol", default="unsupervised", choices=["unsupervised", "semi-supervised"])
    _common(d)
    d.set_defaults(func=_run_davis)

    m = sub.add_parser("mevis", help="MeViS J/F/J&F (valid_u style split with mask_dict.json)")
    m.add_argument("--data", required=True, type=Path, help="split folder with meta_expressions.json, mask_dict.json")
    _common(m)
    m.set_defaults(func=_run_mevis)


def _common(p) -> None:
    p.add_argument("--predictions", type=Path, help="folder of predicted masks (PNG) made elsewhere")
    p.add_argument("--model", help="score a model directly (not implemented yet: use --predictions)")
    p.add_argument("--out", required=True, type=Path, help="folder for metrics.json")
    p.add_argument("--no-progress", action="store_true")


def _need_predictions(args) -> Path:
    if args.predictions is None:
        raise ConfigError("scoring a model directly is not implemented yet: run the model, write its masks, and "
                          "pass the folder with --predictions.")
    if not args.predictions.is_dir():
        raise ConfigError(f"--predictions {args.predictions} is not a folder.")
    return args.predictions


def _write(out: Path, name: str, res: dict) -> Path:
    path = out / name
    write_text_atomic(path, json.dumps(res, indent=2, default=_json_default) + "\n")
    summary = {k: v for k, v in res.items() if isinstance(v, (int, float, str))}
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def read_label_png(path: Path) -> np.ndarray:
    """A DAVIS mask PNG as integer labels: palette PNGs give their indices (255 = void); grayscale 0/255 PNGs
    (DAVIS 2016, binary predictions) give object 1 where > 0."""
    from PIL import Image

    try:
        img = Image.open(path)
        arr = np.array(img)
    except (OSError, ValueError) as e:
        raise MaskError(f"cannot read mask {path}: {e}") from None
    if img.mode == "P":
        return arr.astype(np.int64)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return (arr > 0).astype(np.int64)


def _run_davis(args) -> int:
    from vglamm.evaluation.vos import evaluate_vos, split_label_map

    pred_root = _need_predictions(args)
    ann_root = args.data / "Annotations" / args.resolution
    if not ann_root.is_dir():
        raise DataFormatError(f"{ann_root} not found: --data must be a DAVIS root with Annotations/{args.resolution}.")
    seqs = sorted(p.name for p in ann_root.iterdir() if p.is_dir())

    def items():
        for seq in seqs:
            files = sorted((ann_root / seq).glob("*.png"))
            gt_objs, _ = split_label_map(np.stack([read_label_png(f) for f in files]))
            pred_files = [pred_root / seq / f.name for f in files]
            if not all(f.exists() for f in pred_files):
                pred = np.zeros((0, *gt_objs.shape[1:]), bool)  # missing sequence: every object scores 0
            else:
                labels = np.stack([read_label_png(f) for f in pred_files])
                labels[labels == 255] = 0
                pred, _ = split_label_map(labels, int(labels.max()))
            # The toolkit sets void (255) to background when it loads the ground truth: no void here either.
            yield seq, gt_objs, pred

    res = evaluate_vos(items(), protocol=args.protocol, progress=not args.no_progress)
    _write(args.out, "metrics.json", res)
    return 0


def _run_mevis(args) -> int:
    from vglamm.evaluation.mevis import evaluate_mevis, read_prediction_folder

    pred_root = _need_predictions(args)
    try:
        meta = json.loads((args.data / "meta_expressions.json").read_text())
        mask_dict = json.loads((args.data / "mask_dict.json").read_text())
    except FileNotFoundError as e:
        raise DataFormatError(f"{e.filename} not found: --data must hold meta_expressions.json and "
                              "mask_dict.json (a MeViS valid_u/train split).") from None
    res = evaluate_mevis(meta, mask_dict, read_prediction_folder(pred_root, meta), progress=not args.no_progress)
    _write(args.out, "metrics.json", res)
    return 0
