"""The procedural grounded-video world the shipped model is trained on.

``world`` (scene and motion model) -> ``render`` (frames and visible masks) -> ``language`` (captions and
unambiguous referring expressions) -> ``generate`` (clips in memory, datasets on disk).
"""

from .dataset import SyntheticDataset
from .generate import Clip, GenerationSummary, clip_samples, clip_seed, generate_dataset, make_clip
from .language import Expression, GroundedCaption
from .world import PALETTE, CATEGORIES, Scene, SceneObject, WorldConfig, sample_scene

__all__ = ["CATEGORIES", "PALETTE", "Clip", "Expression", "GenerationSummary", "GroundedCaption", "Scene",
           "SceneObject", "SyntheticDataset", "WorldConfig", "clip_samples", "clip_seed", "generate_dataset", "make_clip", "sample_scene"]
