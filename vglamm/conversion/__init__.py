"""Pretrained weights: build VideoGLaMM from the paper's component checkpoints, or convert its released checkpoint.

``convert_components`` (CLIP + InternVideo2 + Phi-3 [+ VideoGPT+ LoRA] + SAM2) and ``convert_released`` both write a
``VideoGLaMM.from_pretrained`` folder with a ``conversion_report.json`` saying what was loaded, left unused or
freshly initialised. ``vglamm convert`` is their command line (``vglamm/convert.py``).
"""

from vglamm.conversion.checkpoints import ConversionReport, detect_sam2_config, load_sharded, load_tensor_file
from vglamm.conversion.components import convert_components
from vglamm.conversion.released import PREFIX_MAP, convert_released, to_reference_state_dict

__all__ = ["ConversionReport", "PREFIX_MAP", "convert_components", "convert_released", "detect_sam2_config",
           "load_sharded", "load_tensor_file", "to_reference_state_dict"]
