"""Convert the paper's released VideoGLaMM checkpoint (merged weights, transformers ``pytorch_model*.bin`` shards)
into a vglamm ``from_pretrained`` folder.

The reference's module tree (``VideoGLaMMForCausalLM``) maps onto ours prefix by prefix (:data:`PREFIX_MAP`).
CLIP is not in the release (its save filter drops ``image_vision_tower``) and comes from its own checkpoint.
The model is built without memory (parameters on the ``meta`` device) and the source tensors are assigned to it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from vglamm.conversion.checkpoints import (ConversionReport, check_shapes, detect_sam2_config, use_released_sam2,
                                           internvideo2_config_from_state, load_sharded, own_storage, prepare_output,
                                           strip_prefix, write_model)
from vglamm.conversion.components import _CONFIG_METADATA, _dtype, load_clip
from vglamm.errors import ConfigError, MissingWeightsError
from vglamm.modeling.configuration import VideoGLaMMConfig
from vglamm.sample import SEG_TOKEN

# (reference prefix, our prefix or None = unused, whether keys we lack are reported unused instead of an error)
PREFIX_MAP: list[tuple[str, str | None, bool]] = [
    ("model.vision_tower.vision_encoder.", "video_encoder.", True),  # later blocks, distillation heads: unused
    ("model.vision_tower.", None, True),  # vision_proj (contrastive head of stage 2)
    ("model.image_vision_tower.", None, True),  # CLIP, if a release kept it: we load CLIP from its own checkpoint
    ("model.image_mm_projector.", "image_adapter.proj.", False),
    ("model.mm_projector.", "video_adapter.proj.", False),
    ("model.text_hidden_fcs.0.", "seg_adapter.proj.", False),
    ("model.visual_model.", "pixel_decoder.sam.", False),
    ("model.embed_tokens.", "language_model.model.model.embed_tokens.", False),
    ("model.layers.", "language_model.model.model.layers.", False),
    ("model.norm.", "language_model.model.model.norm.", False),
    ("lm_head.", "language_model.model.lm_head.", False),
]


def map_keys(keys, own_keys: set[str], source: str) -> tuple[dict[str, str], list[str]]:
    """Reference key → our key for every source key; returns (mapping, unused keys).

    A key under no known prefix, or one our model lacks under a prefix whose module we mirror exactly, is an
    error naming it (the checkpoint is not a VideoGLaMM release, or of another architecture).
    """
    mapping, unused, unmapped = {}, [], []
    for key in keys:
        for prefix, ours, extras_ok in PREFIX_MAP:
            if key.startswith(prefix):
                target = None if ours is None else ours + key[len(prefix):]
                if target is not None and target in own_keys:
                    mapping[key] = target
                elif extras_ok:
                    unused.append(key)
                else:
                    unmapped.append(key)
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ConfigError(f"{source}: {len(unmapped)} key(s) map onto no vglamm parameter, first {unmapped[0]!r} "
                          f"(all: {unmapped[:8]}{' ...' if len(unmapped) > 8 else ''}); is this a VideoGLaMM "
                          "release of the same architecture? Nothing was written")
    return mapping, sorted(unused)


def llm_config_from_source(src_cfg: dict, vocab_size: int) -> dict:
    """Phi-3 config kwargs for ``LanguageModelConfig.llm_config`` from the release's config.json
    (``model_type`` "VideoGPT+", a Phi3Config subclass); VideoGPT+/VideoGLaMM extras are dropped."""
    from transformers import Phi3Config

    allowed = set(Phi3Config().to_dict()) | {"rope_theta", "rope_scaling"}
    kwargs = {k: v for k, v in src_cfg.items() if k in allowed and k not in _CONFIG_METADATA}
    kwargs["vocab_size"] = vocab_size
    cfg = Phi3Config(**kwargs)
    return {"model_type": "phi3", **{k: v for k, v in cfg.to_dict().items() if k not in _CONFIG_METADATA}}


def _check_seg_token(tokenizer, src_cfg: dict, source: Path) -> int:
    seg_idx = src_cfg.get("seg_token_idx")
    got = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    if got is None or got == tokenizer.unk_token_id:
        raise ConfigError(f"the tokenizer in {source} has no {SEG_TOKEN} token; copy the release's tokenizer files "
                          "(tokenizer.json / tokenizer_config.json / added_tokens.json) into it")
    if seg_idx is None:
        raise ConfigError(f"{source}/config.json has no seg_token_idx; is this a VideoGLaMM release?")
    if int(seg_idx) != got:
        raise ConfigError(f"{source}: config.json says seg_token_idx={seg_idx} but the tokenizer gives {SEG_TOKEN} "
                          f"id {got}; the tokenizer files do not belong to these weights")
    return got


def convert_released(source: str | os.PathLike, *, clip: str | os.PathLike, out: str | os.PathLike,
                     preset: str = "paper", sam2_config: str | None = None, dtype: str | torch.dtype | None = None,
                     overwrite: bool = False) -> ConversionReport:
    """Convert a released VideoGLaMM folder (config.json, tokenizer, ``pytorch_model*.bin`` or safetensors shards)
    into ``out``. ``clip``: the CLIP folder or hub id the release was trained with. The LLM config comes from the
    source config.json, the InternVideo2 and SAM2 variants from the tensors' shapes, the rest from ``preset``.
    ``dtype`` defaults to the release's own (that of its token embeddings).
    """
    from accelerate import init_empty_weights
    from transformers import AutoTokenizer

    from vglamm.modeling.modeling_videoglamm import VideoGLaMM

    # 1. Check inputs: config, tokenizer and [SEG], output folder
    source = Path(source)
    out = prepare_output(out, [source, clip], overwrite)
    config_path = source / "config.json"
    if not config_path.is_file():
        raise MissingWeightsError(f"{source} has no config.json; pass the folder of the released checkpoint")
    src_cfg = json.loads(config_path.read_text())
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(f"cannot load the tokenizer from {source} ({exc}); the release ships its "
                                  "tokenizer files next to config.json") from exc
    seg_id = _check_seg_token(tokenizer, src_cfg, source)
    report = ConversionReport(kind="released", sources={"videoglamm": str(source)})

    # 2. Weights (every shard named by the index)
    state, files = load_sharded(source)
    embed_key = "model.embed_tokens.weight"
    if embed_key not in state:
        raise MissingWeightsError(f"{source} lacks {embed_key!r}; nothing was written")
    rows = int(state[embed_key].shape[0])
    if rows != len(tokenizer):
        raise ConfigError(f"{source}: {embed_key} has {rows} rows but the tokenizer has {len(tokenizer)} tokens; "
                          "the tokenizer files do not belong to these weights")
    target_dtype = _dtype(dtype) or state[embed_key].dtype

    # 3. Config: LLM from config.json, InternVideo2 / SAM2 from shapes, CLIP from its checkpoint, rest from preset
    cfg = VideoGLaMMConfig.preset(preset)
    cfg.language_model = dataclasses.replace(cfg.language_model, pretrained=None, use_lora=False,
                                             llm_config=llm_config_from_source(src_cfg, rows))
    cfg.image_encoder.select_layer = int(src_cfg.get("mm_vision_select_layer", cfg.image_encoder.select_layer))
    image = load_clip(clip, cfg.image_encoder, report, dtype=target_dtype)
    cfg.video_encoder = internvideo2_config_from_state(strip_prefix(state, "model.vision_tower.vision_encoder."),
                                                       cfg.video_encoder, f"{source} (model.vision_tower)")
    cfg.video_encoder_ckpt = None  # its weights are in the release
    sam_config = sam2_config or detect_sam2_config(strip_prefix(state, "model.visual_model."),
                                                   f"{source} (model.visual_model)")
    use_released_sam2(cfg, sam_config)
    cfg.validate()
    report.notes.append(f"SAM2 variant: {sam_config}")

    # 4. A skeleton whose parameters take no memory (buffers are computed for real)
    with init_empty_weights(include_buffers=False):
        model = VideoGLaMM.from_config(cfg, load_components=False, tokenizer=tokenizer)
    own = model.state_dict()

    # 5. Rename, check every key and shape, then assign the source tensors
    mapping, unused = map_keys(state, set(own), str(source))
    ours = {mapping[k]: own_storage(v.to(target_dtype)) for k, v in state.items() if k in mapping}
    reverse = {v: k for k, v in mapping.items()}
    expected = {k: v.shape for k, v in own.items() if not k.startswith("image_encoder.")}
    check_shapes(expected, ours, lambda k: reverse.get(k, _reference_name(k)), str(source))
    ours.update({f"image_encoder.{k}": v for k, v in image.state_dict().items()})
    model.load_state_dict(ours, strict=True, assign=True)
    still_empty = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if still_empty:
        raise MissingWeightsError(f"{source}: no tensor for {still_empty[0]!r}; nothing was written")
    model.set_trainable()
    model.to(target_dtype)
    del state

    report.loaded["videoglamm"] = len(mapping)
    report.unused["videoglamm"] = unused
    report.notes.append(f"[SEG] token id {seg_id} (seg_token_idx of the release)")
    report.notes.append(f"read {len(files)} file(s): {', '.join(f.name for f in files)}")
    if model.seg_token_id != seg_id:  # defensive: the processor reads the id from the same tokenizer
        raise ConfigError(f"converted model uses [SEG] id {model.seg_token_id}, release {seg_id}")

    # 6. Write atomically
    write_model(model.eval(), out, report)
    return report


def _reference_name(ours: str) -> str:
    """The reference key for one of our keys (for error messages when the source lacks it)."""
    for prefix, target, _ in PREFIX_MAP:
        if target is not None and ours.startswith(target):
            return prefix + ours[len(target):]
    return ours


def to_reference_state_dict(model) -> dict[str, torch.Tensor]:
    """Our state dict under the reference's key names (CLIP left out, as the release does). The inverse of the
    conversion, used by the tests to write release-style checkpoints and handy to compare with the reference."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("image_encoder."):
            continue
        name = _reference_name(key)
        if name == key or "lora_" in key or ".base_layer." in key:
            raise ConfigError(f"{key} has no reference name; is LoRA still applied? call merge_lora() first")
        out[name] = value
    return out
