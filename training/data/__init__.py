"""Training data: loaders for the public formats VideoGLaMM trains on, the custom JSONL format, the mixture sampler.

Every loader is a map-style dataset (``len``, ``ds[i] -> GroundedSample``, ``name``, ``records()``).
Submodules are imported lazily so that importing one loader does not import them all.
"""

from __future__ import annotations

from vglamm._lazy import lazy_exports

_EXPORTS = {
    "FrameSampling": "base", "GroundedDataset": "base", "select_frames": "base",
    "GCGVideo": "video_gcg", "GCGAnnotation": "video_gcg", "GCGDenseCaption": "video_gcg",
    "gcg_clip": "video_gcg", "write_video_gcg": "video_gcg", "read_video_gcg": "video_gcg",
    "VideoGCGDataset": "video_gcg",
    "MevisClip": "mevis", "MevisExpression": "mevis", "write_mevis": "mevis", "MevisDataset": "mevis",
    "BracketGCGDataset": "gcg_bracket", "MevisMasks": "gcg_bracket", "PaletteMasks": "gcg_bracket",
    "PngDirMasks": "gcg_bracket",
    "RefYouTubeVOSDataset": "refer_vos", "RefDAVIS17Dataset": "refer_vos", "ReferVOSDataset": "refer_vos",
    "RefCOCODataset": "images", "SemSegDataset": "images", "ade20k": "images", "cocostuff": "images",
    "VideoInstructDataset": "video_instruct",
    "CustomDataset": "custom", "validate_custom": "custom", "ValidationReport": "custom",
    "MixtureSampler": "mixture", "MixtureDataset": "mixture",
    "LOADERS": "registry", "build_dataset": "registry", "register_loader": "registry",
}

__getattr__, __all__ = lazy_exports(__name__, {k: f".{v}" for k, v in _EXPORTS.items()})
