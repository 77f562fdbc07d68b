"""Region-targeted video editing on top of vglamm's grounding.

``edit_video("clip.mp4", target="the red car", prompt="make it blue")``: ground the target, condition its
masks, run an editor from the registry, composite (pixels outside the mask stay the source's) and write.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "edit_video": "editing.pipeline",
    "EditResult": "editing.pipeline",
    "MaskConditioningConfig": "editing.conditioning",
    "ConditionedMasks": "editing.conditioning",
    "condition_masks": "editing.conditioning",
    "composite": "editing.compositing",
    "register_editor": "editing.editors.registry",
    "get_editor": "editing.editors.registry",
    "available_editors": "editing.editors.registry",
    "choose_editor": "editing.editors.auto",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'editing' has no attribute {name!r}")
