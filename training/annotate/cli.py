"""``vglamm annotate``: run a stream, export the review, accept/reject items, write the final GCG file."""

from __future__ import annotations

import argparse
import logging

STREAM_HELP = {
    "masks": "videos with per-object masks: crops -> descriptions -> dense grounded caption",
    "boxes-captions": "videos with boxes and a caption: video caption + LLM; masks from SAM2",
    "boxes-expressions": "videos with boxes and referring expressions: LLM caption; masks from SAM2",
}


def register(subparsers) -> None:
    p = subparsers.add_parser("annotate", help="turn videos with boxes/masks/expressions into grounded data",
                              description="Semi-automatic grounded-caption annotation (see training/annotate/README.md).")
    sub = p.add_subparsers(dest="annotate_command", metavar="STEP", required=True)
    for stream, help_ in STREAM_HELP.items():
        s = sub.add_parser(stream, help=help_, description=help_)
        s.add_argument("--input", required=True, help="JSONL input (one video per line, layout in the README)")
        s.add_argument("--out", required=True, help="output folder (items/, frames/, review/, summary.json, cache/)")
        s.add_argument("--base-url", required=True, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
        s.add_argument("--model", required=True, help="multimodal model name (frames in)")
        s.add_argument("--text-model", help="model for the text-only steps (default: --model)")
        s.add_argument("--text-base-url", help="endpoint of --text-model (default: --base-url)")
        s.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
        s.add_argument("--max-requests", type=int, help="model calls allowed in this run (cache hits are free)")
        s.add_argument("--workers", type=int, default=4, help="videos annotated in parallel")
        s.add_argument("--max-frames", type=int, default=16, help="frames kept per video")
        s.add_argument("--prompt-frames", type=int, default=8, help="frames attached to a whole-video request")
        s.add_argument("--cache", help="answer cache folder (default OUT/cache)")
        s.add_argument("--retries", type=int, default=4, help="retries on network errors / HTTP 5xx / 429")
        s.add_argument("--json-mode", action="store_true", help="ask for response_format=json_object")
        if stream != "masks":
            s.add_argument("--mask-backend", choices=["sam2", "box"], default="sam2",
                           help="box->mask: SAM2 video predictor, or the filled box (baseline)")
            s.add_argument("--sam2-config", default="configs/sam2.1/sam2.1_hiera_l.yaml")
            s.add_argument("--sam2-checkpoint", help="SAM2 .pt matching --sam2-config (required for real masks)")
            s.add_argument("--device", default="cpu")
        s.add_argument("--no-progress", action="store_true")
        s.set_defaults(func=_run_stream, stream=stream)

    r = sub.add_parser("review", help="write overlay videos, captions and accepted.json under OUT/review")
    r.add_argument("out", help="the output folder of a stream run")
    r.add_argument("--fps", type=float, default=4.0)
    r.set_defaults(func=_review)
    for decision in ("accept", "reject"):
        d = sub.add_parser(decision, help=f"{decision} reviewed items")
        d.add_argument("out")
        d.add_argument("ids", nargs="*", help="item ids")
        d.add_argument("--all", action="store_true", help="every produced item")
        d.set_defaults(func=_decide, decision={"accept": "accepted", "reject": "rejected"}[decision])
    f = sub.add_parser("finalize", help="write the accepted items as a video GCG JSON")
    f.add_argument("out")
    f.add_argument("--gcg", required=True, help="path of the GCG JSON to write")
    f.add_argument("--include-pending", action="store_true", help="also take items not reviewed yet")
    f.set_defaults(func=_finalize)


def _run_stream(args: argparse.Namespace) -> int:
    from .backends import OpenAIBackendConfig, OpenAIChatBackend
    from .masks_from_boxes import BoxFillMasks, SAM2BoxMasks, SAM2MaskConfig
    from .pipeline import AnnotationConfig, AnnotationPipeline
    from .streams import StreamConfig

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    vision = OpenAIChatBackend(OpenAIBackendConfig(args.base_url, args.model, api_key_env=args.api_key_env,
                                                   max_retries=args.retries))
    text = None
    if args.text_model or args.text_base_url:
        text = OpenAIChatBackend(OpenAIBackendConfig(args.text_base_url or args.base_url,
                                                     args.text_model or args.model, api_key_env=args.api_key_env,
                                                     max_retries=args.retries))
    masks = None
    if args.stream != "masks":
        masks = BoxFillMasks() if args.mask_backend == "box" else SAM2BoxMasks(
            SAM2MaskConfig(config=args.sam2_config, checkpoint=args.sam2_checkpoint, device=args.device))
    cfg = AnnotationConfig(args.stream, max_frames=args.max_frames, workers=args.workers,
                           max_requests=args.max_requests, cache_dir=args.cache, progress=not args.no_progress,
                           stream_cfg=StreamConfig(prompt_frames=args.prompt_frames, json_mode=args.json_mode))
    summary = AnnotationPipeline(cfg, vision, text, masks).run(args.input, args.out)
    print(summary)
    print(f"next: vglamm annotate review {args.out}")
    return 0


def _review(args: argparse.Namespace) -> int:
    from .review import export_review

    rdir = export_review(args.out, fps=args.fps)
    print(f"review files in {rdir}; edit {rdir / 'accepted.json'} or use `vglamm annotate accept {args.out} ID...`")
    return 0


def _decide(args: argparse.Namespace) -> int:
    from vglamm.errors import ConfigError

    from .review import set_decision

    if not args.ids and not args.all:
        raise ConfigError("name item ids or pass --all")
    decisions = set_decision(args.out, args.ids, args.decision, all_items=args.all)
    counts = {d: sum(v == d for v in decisions.values()) for d in ("accepted", "rejected", "pending")}
    print(", ".join(f"{n} {d}" for d, n in counts.items()))
    return 0


def _finalize(args: argparse.Namespace) -> int:
    from .review import finalize

    path, ids = finalize(args.out, args.gcg, include_pending=args.include_pending)
    print(f"wrote {len(ids)} video(s) to {path}")
    return 0
