"""Build VideoGLaMM from the checkpoints the paper starts from: CLIP, InternVideo2, Phi-3 (+ VideoGPT+ LoRA), SAM2.

Every tensor of every source is either loaded or listed in the report's ``unused``; a missing key or a shape
mismatch is an error naming the key, raised before anything is written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from vglamm.conversion.checkpoints import (ConversionReport, detect_sam2_config, internvideo2_config_from_state,
                                           use_released_sam2,
                                           load_tensor_file, prepare_output, strip_prefix, unwrap_state_dict,
                                           write_model)
from vglamm.errors import ConfigError, MissingWeightsError
from vglamm.modeling.configuration import ImageEncoderConfig, VideoGLaMMConfig

# transformers config entries that describe the file, not the architecture
_CONFIG_METADATA = {"architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype", "id2label",
                    "label2id", "auto_map", "model_type"}
# VideoGPT+'s non-LoRA trainables (its V→L projectors) → our adapters
_PROJECTOR_KEY = re.compile(r"(?:base_model\.model\.)?model\.(image_mm_projector|mm_projector)\.([02])\.(weight|bias)")
_PROJECTOR_TARGET = {"image_mm_projector": "image_adapter", "mm_projector": "video_adapter"}


def load_clip(source: str | os.PathLike, cfg: ImageEncoderConfig, report: ConversionReport, dtype=torch.float32):
    """CLIP vision tower from a transformers folder or hub id (a full CLIPModel checkpoint: its text side is unused).

    Fills ``cfg.vision_config`` from the checkpoint and returns a ``CLIPImageEncoder``.
    """
    from transformers import CLIPVisionModel

    from vglamm.modeling.image_encoder import CLIPImageEncoder

    try:
        model, info = CLIPVisionModel.from_pretrained(str(source), output_loading_info=True, dtype=dtype)
    except OSError as exc:
        raise MissingWeightsError(f"cannot load CLIP from {source}: {exc}. Pass a local folder written by "
                                  "transformers (e.g. a download of openai/clip-vit-large-patch14-336)") from exc
    _check_loading_info(info, f"CLIP checkpoint {source}")
    cfg.pretrained = str(source)
    cfg.vision_config = {k: v for k, v in model.config.to_dict().items() if k not in _CONFIG_METADATA}
    report.sources["clip"] = str(source)
    report.loaded["clip"] = len(model.state_dict())
    report.unused["clip"] = sorted(info["unexpected_keys"])
    return CLIPImageEncoder(cfg, model.eval())


def _check_loading_info(info: dict, source: str) -> None:
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise MissingWeightsError(f"{source} lacks {len(missing)} weight(s), first {missing[0]!r}; nothing was "
                                  "written")
    if info.get("mismatched_keys"):
        key = sorted(info["mismatched_keys"])[0]
        raise ConfigError(f"{source}: {key!r} has the wrong shape; nothing was written")


def load_llm(source: str | os.PathLike, report: ConversionReport, dtype=torch.float32):
    """The causal LM from a transformers folder or hub id, every tensor accounted for."""
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(str(source), output_loading_info=True, dtype=dtype)
    except OSError as exc:
        raise MissingWeightsError(f"cannot load the LLM from {source}: {exc}. Pass a local folder written by "
                                  "transformers (e.g. a download of microsoft/Phi-3-mini-4k-instruct)") from exc
    _check_loading_info(info, f"LLM checkpoint {source}")
    report.sources["llm"] = str(source)
    report.loaded["llm"] = len(model.state_dict())
    report.unused["llm"] = sorted(info["unexpected_keys"])
    return model


def merge_lora(model, lora_dir: str | os.PathLike, report: ConversionReport):
    """Fold a peft LoRA folder (VideoGPT+'s Phi-3 adapter) into ``model``; every adapter tensor must land.

    Returns (merged model, projector tensors from ``non_lora_trainables.bin`` keyed by our names).
    """
    from peft import PeftConfig, get_peft_model, load_peft_weights, set_peft_model_state_dict

    lora_dir = Path(lora_dir)
    if not (lora_dir / "adapter_config.json").is_file():
        raise MissingWeightsError(f"{lora_dir} has no adapter_config.json; --llm-lora must be a peft LoRA folder")
    peft_cfg = PeftConfig.from_pretrained(str(lora_dir))
    try:
        peft_model = get_peft_model(model, peft_cfg)
    except ValueError as exc:  # peft: target modules not found in the base model
        raise ConfigError(f"LoRA {lora_dir} does not fit the LLM: {exc}") from exc
    weights = load_peft_weights(str(lora_dir), device="cpu")
    result = set_peft_model_state_dict(peft_model, weights)
    if result.unexpected_keys:
        raise ConfigError(f"LoRA {lora_dir}: {len(result.unexpected_keys)} tensor(s) match no module of the LLM, "
                          f"first {result.unexpected_keys[0]!r}; is the adapter for this base model?")
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing:
        raise MissingWeightsError(f"LoRA {lora_dir} lacks {len(missing)} tensor(s), first {missing[0]!r}")
    merged = peft_model.merge_and_unload()
    report.sources["llm_lora"] = str(lora_dir)
    report.loaded["llm_lora"] = len(weights)
    report.unused["llm_lora"] = []

    projectors: dict[str, torch.Tensor] = {}
    extra = lora_dir / "non_lora_trainables.bin"
    if extra.is_file():
        state = load_tensor_file(extra)
        unused = []
        for key, value in state.items():
            m = _PROJECTOR_KEY.fullmatch(key)
            if m:
                projectors[f"{_PROJECTOR_TARGET[m.group(1)]}.proj.{m.group(2)}.{m.group(3)}"] = value
            else:
                unused.append(key)
        report.sources["non_lora_trainables"] = str(extra)
        report.loaded["non_lora_trainables"] = len(projectors)
        report.unused["non_lora_trainables"] = sorted(unused)
    return merged, projectors


def _dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ConfigError(f"dtype={name!r}; choose one of {sorted(table)}")
    return table[name]


def convert_components(*, clip: str | os.PathLike, llm: str | os.PathLike, internvideo2: str | os.PathLike,
                       sam2: str | os.PathLike, out: str | os.PathLike, llm_lora: str | os.PathLike | None = None,
                       preset: str = "paper", sam2_config: str | None = None, dtype: str | torch.dtype | None = None,
                       overwrite: bool = False) -> ConversionReport:
    """Assemble a ``from_pretrained`` folder from the component checkpoints the paper starts from.

    clip / llm: transformers folders or hub ids; llm_lora: a peft LoRA folder merged into the LLM (VideoGPT+'s,
    whose ``non_lora_trainables.bin`` also provides the V→L projectors); internvideo2: the stage-2 ``.pt``;
    sam2: Meta's ``.pt`` (variant detected from its keys unless ``sam2_config``). ``preset`` supplies what the
    checkpoints do not determine (frame counts, pooling, SAM2 input size, InternVideo2 heads).
    Returns the report, also written to ``out/conversion_report.json``.
    """
    from transformers import AutoTokenizer

    from vglamm.modeling.language_model import LanguageModel, add_seg_token
    from vglamm.modeling.modeling_videoglamm import VideoGLaMM
    from vglamm.modeling.pixel_decoder import SAM2PixelDecoder, load_sam2_checkpoint
    from vglamm.modeling.video_encoder import InternVideo2Encoder, load_internvideo2_checkpoint

    # 1. Check inputs
    target_dtype = _dtype(dtype)
    out = prepare_output(out, [clip, llm, llm_lora, internvideo2, sam2], overwrite)
    cfg = VideoGLaMMConfig.preset(preset)
    report = ConversionReport(kind="components")

    # 2. SAM2 and InternVideo2 first: cheap to reject a wrong file before loading the LLM
    sam_state = unwrap_state_dict(load_tensor_file(sam2))
    sam_config = sam2_config or detect_sam2_config(sam_state, f"SAM2 checkpoint {sam2}")
    use_released_sam2(cfg, sam_config)
    pixel = SAM2PixelDecoder(cfg.pixel_decoder)
    load_sam2_checkpoint(pixel.sam, sam_state)  # strict: missing / unexpected / wrong shape all raise
    cfg.pixel_decoder.ckpt_path = str(sam2)  # provenance; from_pretrained never re-reads it
    report.sources["sam2"], report.loaded["sam2"], report.unused["sam2"] = str(sam2), len(sam_state), []
    report.notes.append(f"SAM2 variant: {sam_config}")
    del sam_state

    iv2_state = unwrap_state_dict(load_tensor_file(internvideo2))
    encoder_keys = strip_prefix(iv2_state, "vision_encoder.") or iv2_state
    cfg.video_encoder = internvideo2_config_from_state(encoder_keys, cfg.video_encoder,
                                                       f"InternVideo2 checkpoint {internvideo2}")
    video = InternVideo2Encoder(cfg.video_encoder)
    iv2_report = load_internvideo2_checkpoint(video, iv2_state)
    cfg.video_encoder_ckpt = str(internvideo2)
    report.sources["internvideo2"] = str(internvideo2)
    report.loaded["internvideo2"] = len(iv2_report.loaded)
    report.unused["internvideo2"] = iv2_report.unused
    del iv2_state, encoder_keys

    # 3. CLIP
    image = load_clip(clip, cfg.image_encoder, report)

    # 4. LLM (+ LoRA merged) and its tokenizer with [SEG]
    tokenizer = AutoTokenizer.from_pretrained(str(llm))
    add_seg_token(tokenizer)
    base = load_llm(llm, report)
    projectors: dict[str, torch.Tensor] = {}
    if llm_lora is not None:
        base, projectors = merge_lora(base, llm_lora, report)
    cfg.language_model.pretrained = str(llm)
    rows = base.get_input_embeddings().num_embeddings
    lm = LanguageModel.from_config(cfg.language_model, tokenizer, model=base)
    if rows != len(tokenizer):
        report.notes.append(f"LLM vocabulary resized from {rows} to {len(tokenizer)} rows (tokenizer + [SEG]), "
                            "as the reference does")

    # 5. Assemble; adapters are fresh unless VideoGPT+ provided the V→L projectors
    cfg.validate()
    model = VideoGLaMM(cfg, image_encoder=image, video_encoder=video, language_model=lm, pixel_decoder=pixel,
                       tokenizer=tokenizer)
    own = model.state_dict()
    for key, value in projectors.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ConfigError(f"{llm_lora}/non_lora_trainables.bin: projector for {key} has shape "
                              f"{tuple(value.shape)}, model expects {tuple(own[key].shape)}; nothing was written")
    if projectors:
        model.load_state_dict(projectors, strict=False)
    for group in ("image_adapter", "video_adapter"):
        if not any(k.startswith(group + ".") for k in projectors):
            report.initialised.append(group)
    report.initialised.append("seg_adapter")
    if cfg.language_model.use_lora:
        report.initialised.append("lora (B = 0: no effect until trained)")
    report.notes.append(f"[SEG] token id {model.seg_token_id}")

    # 6. Write atomically
    if target_dtype is not None:
        model.to(target_dtype)
    write_model(model.eval(), out, report)
    return report
