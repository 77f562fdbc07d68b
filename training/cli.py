"""`vglamm train` and `vglamm validate-data`."""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train or fine-tune a model from a recipe",
        description="Train from a YAML recipe (see training/configs/). One process on a CPU or a GPU; data "
                    "parallel over N processes (CPU cores or GPUs; optim.batch_size is per process) with "
                    "`torchrun --standalone --nproc_per_node N -m vglamm.cli train RECIPE`; ZeRO over many GPUs "
                    "with the same command and `--set backend=deepspeed`, or the deepspeed launcher.")
    p.add_argument("recipe", help="YAML recipe, e.g. training/configs/finetune_custom.yaml")
    p.add_argument("--resume", default=None, help="run folder or checkpoint folder to continue from exactly")
    p.add_argument("--out", default=None, help="run folder (overrides the recipe's out_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe setting, e.g. --set optim.lr=1e-4 (repeatable)")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    p.set_defaults(func=run_train)

    p = sub.add_parser("validate-data", help="check a custom grounded-data JSONL file, reporting every bad record",
                       description="Validate the custom training format (training/data/README.md): every bad "
                                   "record is reported with its line number.")
    p.add_argument("jsonl", help="the JSONL file")
    p.set_defaults(func=run_validate)


def run_train(args) -> int:
    from training.recipe import load_recipe
    from training.trainer import train

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out_dir={args.out}")
    cfg = load_recipe(args.recipe, overrides)
    train(cfg, resume=args.resume)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # leave the launcher's group cleanly before the process exits
        dist.destroy_process_group()
    if int(os.environ.get("RANK", 0)) == 0:  # once, not once per process
        print(f"done: checkpoints and log.csv in {cfg.out_dir}"
              + (f"; model exported to {cfg.export_dir}" if cfg.export_dir else ""))
    return 0


def run_validate(args) -> int:
    from training.data.custom import validate_custom

    report = validate_custom(args.jsonl)
    print(report.summary())
    return 0 if report.ok else 1
