"""GPU memory a preset needs, COMPUTED from parameter counts (the model is built on the ``meta`` device, so no
weight memory is used) plus a documented activation estimate. Not a measurement.

Run ``python -m vglamm.conversion.memory`` to print the table used in docs/paper-weights.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field


from vglamm.modeling.configuration import VideoGLaMMConfig

COMPONENTS = ("image_encoder", "video_encoder", "image_adapter", "video_adapter", "language_model", "seg_adapter",
              "pixel_decoder")
# Phi-3-mini's tokenizer has 32011 tokens; with [SEG] the embeddings are resized to 32012 rows (as the reference).
PAPER_VOCAB = 32012
GIB = 1024 ** 3


@dataclass
class MemoryEstimate:
    """Parameter counts per component and the memory they imply (bytes)."""

    preset: str
    params: dict[str, int] = field(default_factory=dict)
    trainable: int = 0
    weights_bytes: int = 0
    activation_bytes: dict[str, int] = field(default_factory=dict)
    training_state_bytes: int = 0

    @property
    def total_params(self) -> int:
        return sum(self.params.values())

    @property
    def inference_bytes(self) -> int:
        return self.weights_bytes + sum(self.activation_bytes.values())


def parameter_counts(cfg: VideoGLaMMConfig, vocab_size: int | None = None) -> tuple[dict[str, int], int]:
    """(parameters per component, trainable parameters) of the model ``cfg`` builds, on the meta device.

    The tiny tokenizer stands in for the real one (no download); ``vocab_size`` corrects the embedding and head rows.
    """
    from vglamm.modeling.language_model import add_seg_token, train_tiny_tokenizer
    from vglamm.modeling.modeling_videoglamm import VideoGLaMM

    tokenizer = train_tiny_tokenizer()
    add_seg_token(tokenizer)
    from accelerate import init_empty_weights

    # parameters on meta; not torch.device("meta"), which also moves the scalars SAM2's Hiera reads with .item()
    with init_empty_weights(include_buffers=False):
        model = VideoGLaMM.from_config(cfg, load_components=False, tokenizer=tokenizer)
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in COMPONENTS}
    trainable = sum(p.numel() for p in model.trainable_parameters())
    if vocab_size is not None:
        lm = model.language_model
        tied = lm.embed_tokens.weight is getattr(lm.lm_head, "weight", None)
        extra = (vocab_size - len(tokenizer)) * lm.hidden_size * (1 if tied else 2)
        counts["language_model"] += extra
        trainable += extra  # embeddings and head train in the paper's set
    return counts, trainable


def estimate(cfg: VideoGLaMMConfig, *, preset: str, vocab_size: int | None = None, bytes_per_param: int = 2,
             answer_tokens: int = 512, sam_frames_in_flight: int | None = None) -> MemoryEstimate:
    """Inference memory in bf16 for one video of ``cfg.num_frames`` LLM frames, and the training state.

    Activation terms (bf16): LLM KV cache and prefill MLP peak over visual tokens + ``answer_tokens``; CLIP's kept
    hidden states (all layers, as ``output_hidden_states`` returns them); InternVideo2's widest block; SAM2's
    Hiera first stage for ``encode_batch`` frames.
    """
    params, trainable = parameter_counts(cfg, vocab_size)
    est = MemoryEstimate(preset=preset, params=params, trainable=trainable,
                         weights_bytes=sum(params.values()) * bytes_per_param)
    b = bytes_per_param
    llm = cfg.language_model.llm_config
    from transformers import AutoConfig

    lc = AutoConfig.for_model(llm["model_type"], **{k: v for k, v in llm.items() if k != "model_type"})
    seq = cfg.visual_tokens_per_video + answer_tokens
    head_dim = lc.hidden_size // lc.num_attention_heads
    kv_heads = getattr(lc, "num_key_value_heads", None) or lc.num_attention_heads
    est.activation_bytes["llm_kv_cache"] = 2 * lc.num_hidden_layers * kv_heads * head_dim * seq * b
    est.activation_bytes["llm_prefill"] = seq * (2 * lc.intermediate_size + 4 * lc.hidden_size) * b
    vc = cfg.image_encoder.vision_config
    clip_tokens = cfg.image_encoder.grid ** 2 + 1
    est.activation_bytes["clip"] = (vc["num_hidden_layers"] + 1) * cfg.num_frames * clip_tokens * vc["hidden_size"] * b
    iv = cfg.video_encoder
    iv_tokens = iv.num_frames * iv.tokens_per_frame + 1
    chunks = cfg.num_frames // iv.num_frames
    est.activation_bytes["internvideo2"] = chunks * iv_tokens * (int(iv.embed_dim * iv.mlp_ratio) + 4 * iv.embed_dim) * b
    frames = sam_frames_in_flight or cfg.pixel_decoder.encode_batch
    hiera_width = {"t": 96, "s": 96, "b+": 112, "l": 144}[cfg.pixel_decoder.sam2_config.rsplit("_", 1)[-1][:-5]]
    est.activation_bytes["sam2"] = frames * (cfg.pixel_decoder.image_size // 4) ** 2 * hiera_width * 6 * b
    # training: bf16 gradients + fp32 master copy + AdamW's two fp32 moments for the trainable set
    est.training_state_bytes = trainable * (2 + 4 + 8)
    return est


def paper_estimate() -> MemoryEstimate:
    return estimate(VideoGLaMMConfig.paper(), preset="paper", vocab_size=PAPER_VOCAB)


def markdown_table(estimates: list[MemoryEstimate]) -> str:
    """The per-component table of docs/paper-weights.md."""
    lines = ["| | " + " | ".join(e.preset for e in estimates) + " |", "|---|" + "---:|" * len(estimates)]

    def row(label, values):
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    for name in COMPONENTS:
        row(f"{name} parameters", [f"{e.params[name] / 1e6:,.2f} M" for e in estimates])
    row("**total parameters**", [f"**{e.total_params / 1e9:.3f} B**" for e in estimates])
    row("weights in bf16", [f"{e.weights_bytes / GIB:.2f} GiB" for e in estimates])
    for key in estimates[0].activation_bytes:
        row(f"activations: {key}", [f"{e.activation_bytes[key] / GIB:.2f} GiB" for e in estimates])
    row("**inference (weights + activations)**", [f"**{e.inference_bytes / GIB:.1f} GiB**" for e in estimates])
    row("trainable parameters (paper set)", [f"{e.trainable / 1e6:,.1f} M" for e in estimates])
    row("training: weights + grads + AdamW (no activations)",
        [f"{(e.weights_bytes + e.training_state_bytes) / GIB:.1f} GiB" for e in estimates])
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table([paper_estimate(), estimate(VideoGLaMMConfig.tiny(), preset="tiny")]))
