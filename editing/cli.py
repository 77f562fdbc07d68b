"""``vglamm edit``: the editing sub-command (registered by the top-level ``vglamm`` parser)."""

from __future__ import annotations

import argparse
import json

EPILOG = """\
examples:
  vglamm edit clip.mp4 --target "the red car" --prompt "make it blue" -o out.mp4
  vglamm edit clip.mp4 --target "the man's face" --prompt "pixelate it"
  vglamm edit clip.mp4 --masks masks.json --editor background --option mode=transparent -o matte/
  vglamm edit clip.mp4 --target "the dog" --prompt "a corgi wearing sunglasses" \\
      --pipeline Wan-AI/Wan2.1-VACE-1.3B-diffusers --cpu-offload
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("edit", help="edit the described object in a video",
                              description="Ground the target, then edit only its pixels; the rest of every frame "
                                          "is copied unchanged. Writes an MP4 with the source's fps, frames and audio.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("--target", "-t", help='what to edit, e.g. "the red car" (grounded by the model)')
    p.add_argument("--prompt", "-p", help='what to do, e.g. "make it blue", "blur it", "remove it"')
    p.add_argument("-o", "--output", help="output MP4 (default: <video>_edited.mp4 beside the input)")
    p.add_argument("--editor", default="auto", help="auto (default), recolor, blur, pixelate, remove, background, "
                                                     "highlight, diffusion, sd_inpaint, or a registered one")
    p.add_argument("--pipeline", help="diffusers pipeline: hub id or local directory (for generative edits)")
    p.add_argument("--masks", help="masks instead of grounding: RLE JSON file or folder of mask PNGs")
    p.add_argument("--model", help="grounding model directory or name (default: the shipped model)")
    p.add_argument("--save-masks", help="also write the masks: a folder (PNGs) or a .json file (RLE)")
    p.add_argument("--overlay", help="also write an overlay MP4 of the masks")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="editor option (repeatable), e.g. --option color=blue --option block=12")
    p.add_argument("--seed", type=int, help="seed of generative editors")
    p.add_argument("--steps", type=int, help="denoising steps of generative editors")
    p.add_argument("--cpu-offload", action="store_true", help="enable_model_cpu_offload (GPUs with little memory)")
    p.add_argument("--dilate", type=int, help="grow the mask by this many pixels (default 4)")
    p.add_argument("--feather", type=int, help="soft edge width in pixels (default 3)")
    p.add_argument("--no-audio", action="store_true", help="do not copy the source's audio")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _parse_value(text: str):
    """JSON when it parses (numbers, true/false, lists), the plain string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(pairs: list[str]) -> dict:
    from vglamm.errors import ConfigError

    opts = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {pair!r} must look like KEY=VALUE, e.g. --option color=blue.")
        opts[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return opts


def run(args: argparse.Namespace) -> int:
    from editing.conditioning import MaskConditioningConfig
    from editing.pipeline import edit_video

    options = parse_options(args.option)
    if args.seed is not None:
        options["seed"] = args.seed
    if args.steps is not None:
        options["num_inference_steps"] = args.steps
    if args.cpu_offload:
        options["cpu_offload"] = True
    cond = MaskConditioningConfig()
    if args.dilate is not None:
        cond.dilate = args.dilate
    if args.feather is not None:
        cond.feather = args.feather
    model = None
    if args.model and args.masks is None:
        from vglamm.modeling import VideoGLaMM

        model = VideoGLaMM.from_pretrained(args.model)
    result = edit_video(args.video, args.target, args.prompt, masks=args.masks, model=model, editor=args.editor,
                        options=options or None, pipeline=args.pipeline, conditioning=cond, output=args.output,
                        save_masks=args.save_masks, overlay=args.overlay, keep_audio=not args.no_audio,
                        progress=not args.quiet)
    times = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    print(f"{result.output}  (editor: {result.editor}; {times})")
    return 0
