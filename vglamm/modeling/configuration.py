"""Configuration of VideoGLaMM: one dataclass per component, gathered in :class:`VideoGLaMMConfig`.

Defaults of the component classes are the paper's; :meth:`VideoGLaMMConfig.tiny` builds a random-weight model
that runs on a CPU in seconds. Every config is a plain dataclass that round-trips through JSON
(:meth:`VideoGLaMMConfig.to_dict` / :meth:`VideoGLaMMConfig.from_dict`), so a saved model describes itself.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vglamm.errors import ConfigError
from vglamm.modeling.pixel_decoder import PixelDecoderConfig
from vglamm.modeling.video_encoder import InternVideo2Config

# The reference marks the video in `input_ids` with this id (LLaVA's IMAGE_TOKEN_INDEX); the processor writes it
# once per sample and the model replaces it with every visual token, so the vocabulary stays the LLM's + [SEG].
VIDEO_PLACEHOLDER_ID = -200
IGNORE_INDEX = -100

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Groups of parameters the trainable set is built from (see VideoGLaMM.set_trainable).
TRAINABLE_GROUPS = ("lora", "llm", "embeddings", "lm_head", "image_encoder", "video_encoder", "image_adapter",
                    "video_adapter", "seg_adapter", "mask_decoder", "pixel_decoder")
# What the paper trains: LoRA on the LLM, its embeddings and head, the L→V adapter and SAM2's mask decoder.
PAPER_TRAINABLE = ("lora", "embeddings", "lm_head", "seg_adapter", "mask_decoder")
DECODER_MODES = ("framewise", "temporal")


@dataclass
class ImageEncoderConfig:
    """CLIP vision tower, applied to each frame on its own ("context" encoder of the paper).

    pretrained:   hub id or local folder loaded with ``CLIPVisionModel.from_pretrained``; None = random weights
                  built from ``vision_config``.
    vision_config: ``CLIPVisionConfig`` keyword arguments (filled in from the checkpoint when one is loaded).
    select_layer: hidden-state index whose patch tokens are used (-2: the second-to-last layer).
    crop_size:    input resolution (resize shortest side, then center crop).
    """

    pretrained: str | None = "openai/clip-vit-large-patch14-336"
    vision_config: dict = field(default_factory=lambda: dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu"))
    select_layer: int = -2
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @property
    def crop_size(self) -> int:
        return int(self.vision_config["image_size"])

    @property
    def hidden_size(self) -> int:
        return int(self.vision_config["hidden_size"])

    @property
    def grid(self) -> int:
        """Side of the patch-token grid (24 for ViT-L/14 at 336)."""
        return self.crop_size // int(self.vision_config["patch_size"])


@dataclass
class AdapterConfig:
    """V→L adapters (one per encoder, Linear-GELU-Linear then average pooling of the token grid) and the L→V adapter.

    image_pool / video_pool: side of the pooled grid per frame (paper: CLIP 24→12, InternVideo2 16→8).
    seg_dim: width of the prompt token handed to SAM2 (its prompt-embedding width, 256).
    seg_attention_heads: 0 = the paper's L→V MLP; > 0 adds a cross-attention readout of the visual tokens to it
        (``SegAdapter``), with this many heads.
    """

    image_pool: int = 12
    video_pool: int = 8
    seg_dim: int = 256
    seg_attention_heads: int = 0


@dataclass
class LanguageModelConfig:
    """The causal LM (any transformers model accepting ``inputs_embeds``), its tokenizer, chat template and LoRA.

    pretrained:  hub id or local folder for ``AutoModelForCausalLM`` and ``AutoTokenizer``; None = random weights
                 from ``llm_config`` and the tokenizer trained locally (the tiny preset).
    llm_config:  transformers config kwargs (``model_type`` selects the class; filled in from the checkpoint).
    use_lora / lora_*: peft LoRA on the modules named in ``lora_targets`` (Phi-3 fuses q/k/v in ``qkv_proj``).
    """

    pretrained: str | None = "microsoft/Phi-3-mini-4k-instruct"
    llm_config: dict = field(default_factory=lambda: dict(model_type="phi3"))
    system_prompt: str = "You are a helpful AI assistant."
    max_length: int = 4096
    use_lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("qkv_proj",)

    @property
    def hidden_size(self) -> int:
        return int(self.llm_config["hidden_size"])


@dataclass
class VideoGLaMMConfig:
    """Everything needed to build, train and run a VideoGLaMM model.

    video_encoder_ckpt: InternVideo2 ``.pt`` (local path) read when components are loaded; None = random weights.
    num_frames:        frames the LLM sees (both encoders get the same ones; a multiple of the video chunk size).
    inference_fps / inference_max_frames: how a video file is sampled before the ``num_frames`` uniform pick
                       (the reference: 1 fps, at most 64 frames).
    trainable:         "paper", "all", or a list of groups from ``TRAINABLE_GROUPS``.
    train_decoder_mode: SAM2 decoding used in the training forward ("framewise", or "temporal" on short clips).
    mask_target:       "input" (the reference's): logits upsampled bilinearly to the target masks' size, so the
                       mask losses see the video's own resolution; "lowres": targets resized to SAM2's low-res
                       logits (S/4), less memory. Low-res targets cap what the upsampled masks can learn: on the
                       synthetic world a perfect fit of them scores J 0.80, and the default model gained 0.05 J on
                       the objects it found when trained at "input" (docs/default-model.md).
    use_video_encoder: False drops InternVideo2 and its adapter (the paper's image-encoder-only ablation): the LLM
                       sees only the CLIP tokens of each frame and no video pixels are prepared.
    """

    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    video_encoder: InternVideo2Config = field(default_factory=InternVideo2Config)
    adapters: AdapterConfig = field(default_factory=AdapterConfig)
    language_model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    video_encoder_ckpt: str | None = "OpenGVLab/InternVideo2-Stage2_1B-224p-f4/InternVideo2-stage2_1b-224p-f4.pt"
    num_frames: int = 16
    inference_fps: float | None = 1.0
    inference_max_frames: int | None = 64
    trainable: str | list[str] = "paper"
    train_decoder_mode: str = "framewise"
    mask_target: str = "input"
    ce_weight: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    max_seg_per_sample: int | None = None
    use_video_encoder: bool = True
    name: str = "videoglamm"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ presets
    @classmethod
    def paper(cls, **overrides: Any) -> "VideoGLaMMConfig":
        """The paper's model: CLIP ViT-L/14-336 + InternVideo2-1B + Phi-3-mini + SAM2 Hiera-L.

        The component paths are hub ids / local files; weights are read only when the model is built with
        ``VideoGLaMM.from_config(cfg, load_components=True)``.
        """
        kwargs: dict[str, Any] = dict(video_encoder=InternVideo2Config.paper(),
                                      pixel_decoder=PixelDecoderConfig.paper(ckpt_path="sam2_hiera_large.pt"),
                                      name="videoglamm-paper")
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def tiny(cls, **overrides: Any) -> "VideoGLaMMConfig":
        """A random-weight model of the same structure, small enough for CPU tests (LLM width 64, 2 layers)."""
        image = ImageEncoderConfig(pretrained=None, vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=64,
            patch_size=8, projection_dim=32, hidden_act="quick_gelu"))
        llm = LanguageModelConfig(pretrained=None, llm_config=dict(
            model_type="phi3", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False), max_length=2048)
        kwargs: dict[str, Any] = dict(
            image_encoder=image, video_encoder=InternVideo2Config.tiny(), video_encoder_ckpt=None,
            adapters=AdapterConfig(image_pool=4, video_pool=2, seg_dim=64),
            language_model=llm, pixel_decoder=PixelDecoderConfig.nano(), num_frames=4, inference_max_frames=16,
            name="videoglamm-tiny")
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "VideoGLaMMConfig":
        presets = {"tiny": cls.tiny, "paper": cls.paper}
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return presets[name](**overrides)

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        if self.train_decoder_mode not in DECODER_MODES:
            raise ConfigError(f"train_decoder_mode={self.train_decoder_mode!r}; choose one of {DECODER_MODES}")
        if self.mask_target not in ("lowres", "input"):
            raise ConfigError(f"mask_target={self.mask_target!r}; choose 'lowres' or 'input'")
        self.trainable_groups()  # raises on unknown names
        chunk = self.video_encoder.num_frames
        if self.num_frames < 1 or self.num_frames % chunk:
            raise ConfigError(f"num_frames={self.num_frames} must be a positive multiple of the video encoder's "
                              f"chunk size ({chunk})")
        if not 1 <= self.adapters.image_pool <= self.image_encoder.grid:
            raise ConfigError(f"adapters.image_pool={self.adapters.image_pool} must be in 1..{self.image_encoder.grid} "
                              "(the CLIP token grid)")
        if not 1 <= self.adapters.video_pool <= self.video_encoder.grid:
            raise ConfigError(f"adapters.video_pool={self.adapters.video_pool} must be in 1..{self.video_encoder.grid} "
                              "(the InternVideo2 token grid)")
        if self.adapters.seg_attention_heads < 0:
            raise ConfigError(f"adapters.seg_attention_heads={self.adapters.seg_attention_heads} must be >= 0 "
                              "(0: the paper's L->V MLP)")
        if self.adapters.seg_dim != self.pixel_decoder.prompt_dim:
            raise ConfigError(f"adapters.seg_dim={self.adapters.seg_dim} must equal pixel_decoder.prompt_dim "
                              f"({self.pixel_decoder.prompt_dim})")
        if self.pixel_decoder.location_prompt and not self.adapters.seg_attention_heads:
            raise ConfigError("pixel_decoder.location_prompt prompts SAM2 with where the L->V adapter's visual "
                              "readout looked: it needs adapters.seg_attention_heads > 0")

    def trainable_groups(self) -> tuple[str, ...]:
        """The parameter groups that train, resolved from ``trainable``."""
        if self.trainable == "all":
            return TRAINABLE_GROUPS
        if self.trainable == "paper":
            groups = PAPER_TRAINABLE if self.language_model.use_lora else ("llm",) + PAPER_TRAINABLE[1:]
            return tuple(groups)
        if isinstance(self.trainable, str):
            raise ConfigError(f"trainable={self.trainable!r}; use 'paper', 'all' or a list of {TRAINABLE_GROUPS}")
        unknown = [g for g in self.trainable if g not in TRAINABLE_GROUPS]
        if unknown:
            raise ConfigError(f"unknown trainable groups {unknown}; choose from {TRAINABLE_GROUPS}")
        if "lora" in self.trainable and not self.language_model.use_lora:
            raise ConfigError("trainable includes 'lora' but language_model.use_lora is False")
        return tuple(self.trainable)

    @property
    def visual_tokens_per_video(self) -> int:
        """Visual tokens one video puts into the LLM sequence (paper: 16×144 + 16×64 = 3328)."""
        video = self.adapters.video_pool ** 2 if self.use_video_encoder else 0
        return self.num_frames * (self.adapters.image_pool ** 2 + video)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "VideoGLaMMConfig":
        data = dict(data)
        sub = {"image_encoder": ImageEncoderConfig, "video_encoder": InternVideo2Config, "adapters": AdapterConfig,
               "language_model": LanguageModelConfig, "pixel_decoder": PixelDecoderConfig}
        for key, klass in sub.items():
            if key in data and isinstance(data[key], dict):
                data[key] = _build(klass, data[key])
        return _build(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "VideoGLaMMConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); re-save the model with save_pretrained") from e


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def _build(klass, data: dict):
    """Build a dataclass from a dict: unknown keys are an error; lists go back to tuples where the default is one."""
    if hasattr(klass, "from_dict") and klass is not VideoGLaMMConfig and not dataclasses.is_dataclass(klass):
        return klass.from_dict(data)
    names = {f.name: f for f in dataclasses.fields(klass)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{klass.__name__} has no field(s) {unknown}; the config was written by another version")
    kwargs = {}
    for key, value in data.items():
        f = names[key]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return klass(**kwargs)
