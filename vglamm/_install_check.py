"""Fail loudly when the environment holds packages that break vglamm on CPU machines.

Run by ``make setup``: torchvision's registry wheels are CUDA builds that fail to import next to CPU torch
and then break transformers; CUDA runtime wheels mean a torch other than the pinned CPU build got in.

The ``sam2`` wheel (1.1.0) also installs Meta's own top-level ``training`` package into site-packages, which
shadows vglamm's ``training`` everywhere but the repository root (``vglamm train`` then fails importing
``tensordict``). ``--fix-sam2-training`` deletes exactly the files sam2's RECORD lists under ``training/``.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

OURS = Path(__file__).resolve().parents[1] / "training"


def sam2_training_files() -> list[Path]:
    """Files of sam2's stray top-level ``training`` package (empty when sam2 is absent or already fixed)."""
    try:
        dist = md.distribution("sam2")
    except md.PackageNotFoundError:
        return []
    files = [Path(dist.locate_file(f)) for f in dist.files or [] if f.parts and f.parts[0] == "training"]
    return [f for f in files if f.exists()]


def training_shadowed() -> str | None:
    """Where ``import training`` resolves when it is not vglamm's, else None (as from any directory).

    The path-based finder runs before the editable install's finder, so a ``training`` it finds on ``sys.path``
    (the repository root left out) wins over ours.
    """
    from importlib.machinery import PathFinder

    path = [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != OURS.parent]
    spec = PathFinder.find_spec("training", path)
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin).resolve()
    return None if OURS in origin.parents else str(origin)


def fix_sam2_training() -> int:
    """Delete sam2's stray ``training`` files; returns how many were removed."""
    files = sam2_training_files()
    for f in files:
        f.unlink()
    for d in sorted({p.parent for p in files}, key=lambda p: len(p.parts), reverse=True):
        for cache in d.glob("__pycache__"):
            for c in cache.iterdir():
                c.unlink()
            cache.rmdir()
        if d.exists() and not any(d.iterdir()):
            d.rmdir()
    return len(files)


def problems() -> list[str]:
    found = []
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == "torchvision":
            found.append(f"torchvision {dist.version} is installed: uninstall it (pip uninstall -y torchvision)")
        elif name.startswith("nvidia-") or name.startswith("triton"):
            found.append(f"{name} {dist.version} is a CUDA package: something pulled a CUDA torch; reinstall torch==2.13.0 first")
    torch_version = md.version("torch")
    if "+cpu" not in torch_version and sys.platform.startswith("linux") and "--allow-gpu" not in sys.argv:
        found.append(f"torch {torch_version} is not the CPU build this install pins (2.13.0+cpu)")
    if sam2_training_files():
        found.append("sam2 installed its own top-level `training` package, which shadows vglamm's: "
                     "run `python -m vglamm._install_check --fix-sam2-training`")
    return found


def main() -> int:
    if "--fix-sam2-training" in sys.argv:
        print(f"install check: removed {fix_sam2_training()} files of sam2's stray `training` package")
    found = problems()
    for line in found:
        print("install check:", line, file=sys.stderr)
    if not found:
        print(f"install check: ok (torch {md.version('torch')}, no torchvision, no CUDA wheels)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
