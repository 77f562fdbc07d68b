"""The VideoGLaMM model: configuration, components, processor, training forward and grounded generation."""

from vglamm.modeling.configuration import (AdapterConfig, ImageEncoderConfig, LanguageModelConfig,
                                           VideoGLaMMConfig)
from vglamm.modeling.modeling_videoglamm import (GroundedAnswer, GroundedObject, VideoGLaMM, VideoGLaMMOutput,
                                                 builtin_models, load_default_model)
from vglamm.modeling.processing import VideoGLaMMProcessor, gcg_prompt, referring_prompt

__all__ = ["AdapterConfig", "ImageEncoderConfig", "LanguageModelConfig", "VideoGLaMMConfig", "GroundedAnswer",
           "GroundedObject", "VideoGLaMM", "VideoGLaMMOutput", "VideoGLaMMProcessor", "builtin_models",
           "gcg_prompt", "load_default_model", "referring_prompt"]
