"""Training data: loaders for the public formats VideoGLaMM trains on, the custom JSONL format, the mixture sampler.

Every loader is a map-style dataset (``len``, ``ds[i] -> GroundedSample``, ``name``, ``records()``).
Submodules are imported lazily so that importing one loader does not import them all.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FrameSampling": "base", "GroundedDataset": "base", "select_frames": "base",
    "GCGVideo": "video_gcg", "GCGAnnotation": "video_gcg", "GCGDenseCaption": "video_gcg",
    "gcg_clip": "video_gcg", "write_video_gcg": "video_gcg", "read_video_gcg": "video_gcg",
    "VideoGCGDataset": "video_gcg",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
