"""`vglamm convert`: make a vglamm model folder from the paper's weights (see docs/paper-weights.md).

    vglamm convert components --clip CLIP --llm PHI3 [--llm-lora VIDEOGPTPLUS] --internvideo2 IV2.pt --sam2 SAM2.pt --out DIR
    vglamm convert released VIDEOGLAMM_DIR --clip CLIP --out DIR
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert released checkpoints into vglamm's format",
                       description="Build a vglamm model folder (VideoGLaMM.from_pretrained) from the paper's "
                                   "component checkpoints or from its released VideoGLaMM checkpoint. Nothing is "
                                   "written unless every tensor is accounted for.")
    kinds = p.add_subparsers(dest="convert_kind", metavar="KIND")

    c = kinds.add_parser("components", help="CLIP + InternVideo2 + Phi-3 (+ LoRA) + SAM2 -> a model to train",
                         description="Assemble the paper's starting point; the adapters (and L→V) are fresh.")
    c.add_argument("--clip", required=True, help="CLIP folder or hub id (openai/clip-vit-large-patch14-336)")
    c.add_argument("--llm", required=True, help="LLM folder or hub id (microsoft/Phi-3-mini-4k-instruct)")
    c.add_argument("--llm-lora", default=None,
                   help="peft LoRA folder merged into the LLM (VideoGPT+ Phi-3; its non_lora_trainables.bin "
                        "provides the V→L projectors)")
    c.add_argument("--internvideo2", required=True, help="InternVideo2-stage2_1b-224p-f4.pt")
    c.add_argument("--sam2", required=True, help="Meta's SAM2 / SAM2.1 checkpoint (sam2_hiera_large.pt)")
    _common(c)
    c.set_defaults(func=run_components)

    r = kinds.add_parser("released", help="the released VideoGLaMM checkpoint -> a vglamm model folder",
                         description="Convert the folder of the released checkpoint (pytorch_model*.bin shards, "
                                     "config.json, tokenizer).")
    r.add_argument("source", help="folder of the released VideoGLaMM checkpoint")
    r.add_argument("--clip", required=True, help="CLIP folder or hub id (openai/clip-vit-large-patch14-336)")
    _common(r)
    r.set_defaults(func=run_released)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output model folder (written atomically)")
    p.add_argument("--preset", default="paper", choices=["paper", "tiny"],
                   help="settings the checkpoints do not determine (frames, pooling, SAM2 input size)")
    p.add_argument("--sam2-config", default=None,
                   help="sam2 package config (default: detected from the checkpoint's keys and shapes)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="saved precision (components default: float32; released default: the release's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def run_components(args) -> int:
    from vglamm.conversion import convert_components

    report = convert_components(clip=args.clip, llm=args.llm, llm_lora=args.llm_lora, internvideo2=args.internvideo2,
                                sam2=args.sam2, out=args.out, preset=args.preset, sam2_config=args.sam2_config,
                                dtype=args.dtype, overwrite=args.overwrite)
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


def run_released(args) -> int:
    from vglamm.conversion import convert_released

    report = convert_released(args.source, clip=args.clip, out=args.out, preset=args.preset,
                              sam2_config=args.sam2_config, dtype=args.dtype, overwrite=args.overwrite)
    print(report.summary())
    print(f"wrote {args.out}")
    return 0
