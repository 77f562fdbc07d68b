"""The `vglamm` command line. Each area adds its sub-command through a `register(subparsers)` function.

Sub-commands are imported only when needed so that `vglamm --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (sub-command, module that has `register(subparsers)`, one-line help shown when the module is missing)
_AREAS = [
    ("segment", "vglamm.commands", None),
    ("chat", "vglamm.commands", None),
    ("edit", "editing.cli", "edit the described object in a video"),
    ("eval", "vglamm.evaluation.cli", "score a model or predictions on a benchmark"),
    ("train", "training.cli", "train or fine-tune a model from a recipe"),
    ("annotate", "training.annotate.cli", "turn videos with boxes/masks/expressions into grounded data"),
    ("convert", "vglamm.convert", "convert released checkpoints into vglamm's format"),
    ("demo", "vglamm.demo", None),
    ("doctor", "vglamm.commands", None),
]

DESCRIPTION = """\
vglamm: find the thing you describe in a video, pixel by pixel, and edit it.

  vglamm segment clip.mp4 "the red car" --out masks/      masks of the described object, every frame
  vglamm chat clip.mp4 "Describe the video."               a grounded answer: text + a mask per phrase
  vglamm edit clip.mp4 --target "the red car" --prompt "make it blue" -o out.mp4
  vglamm train training/configs/finetune_custom.yaml       fine-tune on your own grounded videos
  vglamm eval refdavis --data ROOT --model default --out results/

Run `vglamm COMMAND --help` for the options of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vglamm", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered = set()
    for name, module, _ in _AREAS:
        if module in registered:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if not (err.name or "").startswith(module.split(".")[0]):
                raise  # a real missing dependency inside the module: show it
            continue
        mod.register(sub)
        registered.add(module)
    return parser


def _version() -> str:
    from vglamm import __version__

    return f"vglamm {__version__}"


def _training_shadowed_error(argv: list[str]) -> str | None:
    """A fix-it message when a `training`-area command is asked for but sam2's stray package shadows ours."""
    command = next((a for a in argv if not a.startswith("-")), None)
    areas = {name for name, module, _ in _AREAS if module.startswith("training")}
    if command not in areas:
        return None
    from vglamm._install_check import training_shadowed

    where = training_shadowed()
    if where is None:
        return None
    return (f"vglamm {command}: error: `import training` finds {where}, the training package the sam2 wheel "
            "installs, not vglamm's. Remove it with: python -m vglamm._install_check --fix-sam2-training")


def main(argv: list[str] | None = None) -> int:
    message = _training_shadowed_error(sys.argv[1:] if argv is None else list(argv))
    if message:
        print(message, file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from vglamm.errors import VglammError

    try:
        return int(args.func(args) or 0)
    except VglammError as err:
        print(f"vglamm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
