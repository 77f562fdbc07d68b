"""Region-targeted video editing on top of vglamm's grounding.

``edit_video("clip.mp4", target="the red car", prompt="make it blue")``: ground the target, condition its
masks, run an editor from the registry, composite (pixels outside the mask stay the source's) and write.
"""

from __future__ import annotations

from vglamm._lazy import lazy_exports

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

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
