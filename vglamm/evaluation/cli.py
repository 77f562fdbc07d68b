"""`vglamm eval`: run a model on a benchmark (or score masks made elsewhere) and write metrics JSON.

    vglamm eval refdavis --data REF_DAVIS_ROOT --model default --out results/refdavis
    vglamm eval mevis    --data MEVIS/valid_u  --model default --out results/mevis [--zip]
    vglamm eval gcg      --data GCG_TEST_JSON  --model default --out results/gcg --frames-root FRAMES
    vglamm eval vidstg   --data VIDSTG_ROOT    --model default --out results/vidstg
    vglamm eval mevis    --data MEVIS/valid_u  --predictions results/mevis/predictions --out scored/

With --model: masks go to OUT/predictions (the benchmark's own format), one result per video to
OUT/per_video/, metrics to OUT/metrics.json; a rerun resumes. Several GPUs: `torchrun --nproc_per_node N -m
vglamm.cli eval ...` shards the videos (rank 0 merges), or run ranks by hand with RANK / WORLD_SIZE and finish
with --merge-only. Layouts: see vglamm.evaluation.runners.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from vglamm.errors import ConfigError, DataFormatError
from vglamm.evaluation.runners import read_label_png, write_json  # noqa: F401  (read_label_png: public here)


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score a model or predictions on a benchmark",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)

    d = sub.add_parser("refdavis", help="Ref-DAVIS17 J/F/J&F (unsupervised protocol, mean of 4 annotator sets)")
    d.add_argument("--data", required=True, type=Path,
                   help="Ref-DAVIS17 root (meta_expressions/<split>, <split>/JPEGImages, <split>/Annotations); "
                        "with --predictions also a plain DAVIS root with Annotations/<resolution>/<seq>/*.png")
    d.add_argument("--split", default="valid")
    d.add_argument("--resolution", default="480p", help="plain DAVIS root only")
    d.add_argument("--protocol", default="unsupervised", choices=["unsupervised", "semi-supervised"],
                   help="plain DAVIS root only")
    _common(d)

    m = sub.add_parser("mevis", help="MeViS J/F/J&F (valid_u) or server submission (valid, Ref-YouTube-VOS)")
    m.add_argument("--data", required=True, type=Path,
                   help="MeViS split folder (meta_expressions.json, JPEGImages, mask_dict.json) or a "
                        "Ref-YouTube-VOS root (meta_expressions/<split>, <split>/JPEGImages)")
    m.add_argument("--split", default="valid", help="Ref-YouTube-VOS root only")
    m.add_argument("--zip", action="store_true", help="also write OUT/submission.zip for the server")
    m.add_argument("--zip-root", default="", help="folder inside the zip (Ref-YouTube-VOS: Annotations)")
    _common(m)

    g = sub.add_parser("gcg", help="grounded captions: mIoU, Recall, METEOR, CIDEr, CLAIR")
    g.add_argument("--data", required=True, type=Path, help="GCG JSON, or a folder with [instruction_data/]<split>.json")
    g.add_argument("--split", default="test")
    g.add_argument("--frames-root", type=Path, help="folder the JSON's file_names are relative to "
                                                     "(default: the JSON's folder)")
    g.add_argument("--phrase-encoder", default="auto", help="auto|bert-base-uncased|minilm|bow|PATH (Recall)")
    g.add_argument("--no-captions", action="store_true", help="skip METEOR and CIDEr")
    g.add_argument("--clair-url", help="OpenAI-compatible API root for the CLAIR judge (key: $OPENAI_API_KEY)")
    g.add_argument("--clair-model", help="judge model name for CLAIR")
    _common(g)

    v = sub.add_parser("vidstg", help="VidSTG spatio-temporal grounding: box mIoU per question type")
    v.add_argument("--data", required=True, type=Path, help="root with frames/<video>/ and questions/<id>.json")
    _common(v)


def _common(p) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="model folder or built-in name to run on the benchmark")
    src.add_argument("--predictions", type=Path, help="folder of masks made elsewhere (the layout --model writes "
                                                      "under OUT/predictions)")
    src.add_argument("--merge-only", action="store_true", help="merge the per-video results of finished shards")
    p.add_argument("--out", required=True, type=Path, help="folder for metrics.json (and predictions, per_video)")
    p.add_argument("--mode", default="temporal", choices=["temporal", "framewise"], help="mask decoding mode")
    p.add_argument("--limit", type=int, help="only the first N videos (quick runs)")
    p.add_argument("--device", help="torch device (default: cuda:$LOCAL_RANK when CUDA is available, else cpu)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="answer length cap for chat-style benchmarks")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


# ---------------------------------------------------------------------------------------------------------------
def _runner(args):
    from vglamm.evaluation import runners as r

    if args.benchmark == "refdavis":
        return r.RefDavisRunner(args.data, args.split)
    if args.benchmark == "mevis":
        return r.MevisRunner(args.data, args.split)
    if args.benchmark == "gcg":
        clair = None
        if args.clair_url or args.clair_model:
            if not (args.clair_url and args.clair_model):
                raise ConfigError("CLAIR needs both --clair-url and --clair-model.")
            from vglamm.evaluation.captions import ClairJudge
            clair = ClairJudge(args.clair_url, args.clair_model)
        scoring = r.GCGScoring(args.phrase_encoder, captions=not args.no_captions, clair=clair)
        return r.GCGRunner(args.data, args.split, args.frames_root, scoring)
    return r.VidSTGRunner(args.data)


def _device(name: str | None):
    if name:
        return name
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def _print(res: dict, path: Path) -> None:
    summary = {k: v for k, v in res.items() if isinstance(v, (int, float, str))}
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


def _run(args) -> int:
    from vglamm.evaluation.runners import RunOptions, run_benchmark

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: give a positive number of videos.")
    if args.benchmark == "refdavis" and args.predictions is not None \
            and not (args.data / "meta_expressions" / args.split).is_dir():
        return _run_plain_davis(args)
    if args.model is None and args.predictions is None and not args.merge_only:
        raise ConfigError("give --model NAME_OR_DIR to run a model, --predictions DIR to score masks made "
                          "elsewhere, or --merge-only to merge finished shards.")
    runner = _runner(args)
    keys = runner.keys()[:args.limit] if args.limit else runner.keys()

    if args.predictions is not None:
        if not args.predictions.is_dir():
            raise ConfigError(f"--predictions {args.predictions} is not a folder.")
        res = {"benchmark": runner.name, **runner.score_predictions(args.predictions, keys),
               "predictions": str(args.predictions)}
        _print(res, write_json(args.out / "metrics.json", res))
        if getattr(args, "zip", False):
            print(f"wrote {runner.write_zip(args.predictions, keys, args.out / 'submission.zip', args.zip_root)}")
        return 0

    def load():
        from vglamm.modeling import VideoGLaMM

        return VideoGLaMM.from_pretrained(args.model, device=_device(args.device))

    res = run_benchmark(runner, args.out, model_loader=load, model_name=args.model,
                        opts=RunOptions(args.mode, args.max_new_tokens), limit=args.limit,
                        progress=not args.no_progress, merge_only=args.merge_only)
    if res is None:  # another rank merges, or shards are unfinished
        return 0
    _print(res, args.out / "metrics.json")
    if getattr(args, "zip", False):
        print(f"wrote {runner.write_zip(args.out / 'predictions', keys, args.out / 'submission.zip', args.zip_root)}")
    return 0


def _run_plain_davis(args) -> int:
    """Masks made elsewhere against a plain DAVIS root (Annotations/<resolution>/<seq>/*.png)."""
    from vglamm.evaluation.vos import evaluate_vos, split_label_map

    pred_root = args.predictions
    if not pred_root.is_dir():
        raise ConfigError(f"--predictions {pred_root} is not a folder.")
    ann_root = args.data / "Annotations" / args.resolution
    if not ann_root.is_dir():
        raise DataFormatError(f"{ann_root} not found: --data must be a Ref-DAVIS17 root (meta_expressions/"
                              f"{args.split}) or a DAVIS root with Annotations/{args.resolution}.")
    seqs = sorted(p.name for p in ann_root.iterdir() if p.is_dir())[:args.limit]

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
    _print(res, write_json(args.out / "metrics.json", res))
    return 0
