"""Fail loudly when the environment holds packages that break vglamm on CPU machines.

Run by ``make setup``: torchvision's registry wheels are CUDA builds that fail to import next to CPU torch
and then break transformers; CUDA runtime wheels mean a torch other than the pinned CPU build got in.
"""

from __future__ import annotations

import importlib.metadata as md
import sys


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
    return found


def main() -> int:
    found = problems()
    for line in found:
        print("install check:", line, file=sys.stderr)
    if not found:
        print(f"install check: ok (torch {md.version('torch')}, no torchvision, no CUDA wheels)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
