"""vglamm: VideoGLaMM as a library. Pixel-level grounding in videos, and the editing built on it.

The data flow, one module each: video (``vglamm.io``) → frames → encoders (``modeling.image_encoder``,
``modeling.video_encoder``) → V→L adapters (``modeling.adapters``) → LLM (``modeling.language_model``)
→ ``[SEG]`` → L→V adapter → SAM2 (``modeling.pixel_decoder``) → masks → editor (``editing``) → video.
"""

from __future__ import annotations

from vglamm._lazy import lazy_exports

__version__ = "0.1.0"

# Public names, resolved on first use so that `import vglamm` does not import torch.
_EXPORTS = {
    "Video": "vglamm.io.video",
    "VideoInfo": "vglamm.io.video",
    "load_video": "vglamm.io.video",
    "iter_video": "vglamm.io.video",
    "probe_video": "vglamm.io.video",
    "write_video": "vglamm.io.video",
    "GroundedSample": "vglamm.sample",
    "VideoGLaMM": "vglamm.modeling",
    "VideoGLaMMConfig": "vglamm.modeling",
    "load_default_model": "vglamm.modeling",
}
_ERRORS = ["VglammError", "VideoReadError", "VideoWriteError", "MaskError", "MissingWeightsError",
           "NoTargetFoundError", "DataFormatError", "ConfigError"]
_EXPORTS.update({name: "vglamm.errors" for name in _ERRORS})

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
