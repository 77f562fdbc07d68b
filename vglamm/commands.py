"""`vglamm segment`, `vglamm chat` and `vglamm doctor`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="masks of the described object on every frame",
                       description="Ground a referring expression in a video and write its masks "
                                   "(COCO RLE JSON, DAVIS palette PNGs, and an overlay MP4).")
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("expression", help='what to find, e.g. "the red car"')
    _model_args(p)
    p.add_argument("--out", required=True, help="output folder (masks.json, masks/ PNGs, overlay.mp4)")
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay video")
    p.set_defaults(func=run_segment)

    p = sub.add_parser("chat", help="grounded answer: text plus a mask per phrase",
                       description="Ask a question about a video; the answer's phrases come with masks.")
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("prompt", nargs="?", default=None,
                   help="question (default: the grounded-caption prompt of the paper)")
    _model_args(p)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--out", default=None, help="folder for answer.json, masks.json and overlay.mp4")
    p.set_defaults(func=run_chat)

    p = sub.add_parser("doctor", help="check the installation (torch build, no torchvision, sam2, weights)")
    p.set_defaults(func=run_doctor)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="model directory or built-in name (default: the demonstration model shipped with vglamm)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--mode", choices=["temporal", "framewise"], default="temporal",
                   help="SAM2 decoding: memory propagation across frames, or every frame alone")


def _load_model(args):
    from vglamm.modeling import VideoGLaMM

    return VideoGLaMM.from_pretrained(args.model, device=args.device)


def _write_outputs(out: Path, video, objects: list[tuple], overlay: bool) -> None:
    """objects = [(phrase, (T,H,W) bool masks)] → masks.json (COCO RLE), masks/ (DAVIS palette PNGs, object k =
    label k) and overlay.mp4."""
    from vglamm.io.masks import save_davis_pngs, save_rle_json
    from vglamm.io.overlay import write_overlay_video

    out.mkdir(parents=True, exist_ok=True)
    by_id = {k: masks for k, (_, masks) in enumerate(objects, 1)}
    names = [f"{int(i):05d}.png" for i in video.frame_indices]
    save_rle_json(out / "masks.json", by_id, phrases=[p for p, _ in objects], video=str(video.path or ""),
                  frame_names=names)
    save_davis_pngs(out / "masks", by_id, frame_names=names)
    if overlay:
        write_overlay_video(out / "overlay.mp4", video, objects)


def run_segment(args) -> int:
    from vglamm.io.video import load_video

    video = load_video(args.video)
    model = _load_model(args)
    masks = model.segment(video, args.expression, mode=args.mode)
    _write_outputs(Path(args.out), video, [(args.expression, masks)], overlay=not args.no_overlay)
    visible = int(masks.any(axis=(1, 2)).sum())
    print(f"found '{args.expression}' on {visible}/{len(masks)} frames; wrote {args.out}")
    return 0


def run_chat(args) -> int:
    from vglamm.io.video import load_video

    video = load_video(args.video)
    model = _load_model(args)
    answer = model.chat(video, args.prompt, max_new_tokens=args.max_new_tokens, mode=args.mode)
    print(answer.text)
    for i, obj in enumerate(answer.objects, 1):
        print(f"  [{i}] {obj.phrase}: visible on {int(obj.masks.any(axis=(1, 2)).sum())} frames")
    if args.out:
        from vglamm.io.atomic import write_text_atomic

        objects = [(o.phrase, o.masks) for o in answer.objects]
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "answer.json", json.dumps({"text": answer.text, "raw_text": answer.raw_text,
                                                           "phrases": [o.phrase for o in answer.objects]}, indent=2))
        if objects:
            _write_outputs(out, video, objects, overlay=True)
        print(f"wrote {out}")
    return 0


def run_doctor(args) -> int:
    import importlib.metadata as md
    import importlib.util

    from vglamm._install_check import problems

    for name in ["torch", "transformers", "peft", "diffusers", "deepspeed", "sam2", "av", "decord"]:
        try:
            print(f"{name:13s} {md.version(name)}")
        except md.PackageNotFoundError:
            print(f"{name:13s} MISSING")
    import torch

    print(f"{'accelerator':13s} {'cuda: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none (CPU)'}")
    weights = Path(importlib.util.find_spec("vglamm").origin).parent / "weights" / "default"
    print(f"{'default model':13s} {'present' if (weights / 'config.json').exists() else 'missing'} ({weights})")
    found = problems()
    for line in found:
        print("problem:", line)
    print("ok" if not found else f"{len(found)} problem(s)")
    return 1 if found else 0
