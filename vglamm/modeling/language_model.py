"""The language model: a transformers causal LM fed with ``inputs_embeds``, its tokenizer with ``[SEG]``, and LoRA.

The paper uses Phi-3-mini-4k-instruct. The tiny preset builds a random Phi-3 of width 64 and trains a byte-level BPE
tokenizer in milliseconds on a built-in corpus (no tokenizer files ship anywhere on these machines).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from vglamm.modeling.configuration import LanguageModelConfig
from vglamm.sample import SEG_TOKEN

# Phi-3's chat tokens, plus the phrase tags (plain text for the real Phi-3 tokenizer, single tokens in the tiny one).
CHAT_SPECIAL_TOKENS = ["<unk>", "<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
                       "<p>", "</p>"]
END_OF_TURN = "<|end|>"

_COLOURS = "red green blue yellow black white orange purple pink brown grey gray silver golden dark light"
_OBJECTS = ("person man woman boy girl child people player rider dog cat horse cow sheep bird duck fish car truck bus "
            "bike bicycle motorcycle train boat airplane ball frisbee skateboard surfboard kite umbrella bag box cup "
            "bottle chair table bed sofa door window tree grass road water sky wall floor hand head shirt hat "
            "circle square triangle star disk ring blob shape object animal vehicle background left right one two")
_MOTIONS = ("moves moving runs running walks walking jumps jumping rolls rolling flies flying swims swimming turns "
            "turning stands standing sits sitting rides riding holds holding throws catches follows chases "
            "bounces spins slides falls enters leaves appears disappears stops starts across toward away up down "
            "fast slowly first then while behind front next")
_TEMPLATES = [
    "You are a helpful AI assistant.",
    "Could you please give me a detailed description of the video? Please respond with interleaved segmentation "
    "masks for the corresponding parts of the answer.",
    "What is the {exp} in this video? Please respond with segmentation masks.",
    "Can you segment the {exp} in this video?",
    "Please segment the {exp} in this video.",
    "Sure, it is [SEG]. It is [SEG]. Sure, [SEG].",
    "In the video, <p> a red car </p> [SEG] moves to the left while <p> a dog </p> [SEG] runs across the grass.",
    "Describe the video. What happens in this video? Where is it? Which one is it?",
    "a an the is are and with of in on at to from by it this that there which who what where when how",
]


def builtin_corpus() -> list[str]:
    """Small text corpus for the tiny tokenizer: prompts, answers and the words grounded-video data uses."""
    words = f"{_COLOURS} {_OBJECTS} {_MOTIONS}".split()
    lines = list(_TEMPLATES)
    for i, w in enumerate(words):
        colour = _COLOURS.split()[i % len(_COLOURS.split())]
        lines.append(f"<p> the {colour} {w} </p> [SEG] {w} {w.capitalize()}")
        lines.append(_TEMPLATES[2].format(exp=f"{colour} {w}"))
    return lines * 4


def train_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on :func:`builtin_corpus` (deterministic, milliseconds)."""
    # 512 tokens split most words into pieces ("cyan" -> "Ġc y an"). Kept on purpose: a 1024-token version whose
    # corpus kept every word of the synthetic world whole left the default recipe's mask loss on its plateau for
    # 1,500 steps (dual) and 1,070 (image-only, both then stopped); with this one it leaves by step ~400
    # (docs/design.md).
    # The shipped model's own tokenizer.json is what loads it; this only builds new tiny models.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=CHAT_SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(builtin_corpus(), trainer=trainer)
    # pad = unk, as the reference does for Phi-3 (its pad is never a label).
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="<|endoftext|>", pad_token="<unk>", model_max_length=2048)


def add_seg_token(tokenizer) -> int:
    """Add ``[SEG]`` as a plain (not special) added token, as the reference does; return its id."""
    tokenizer.add_tokens([SEG_TOKEN])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer.convert_tokens_to_ids(SEG_TOKEN)


def build_tokenizer(cfg: LanguageModelConfig):
    """The tokenizer with ``[SEG]``: AutoTokenizer for a pretrained LLM, else the locally trained tiny one."""
    tokenizer = AutoTokenizer.from_pretrained(cfg.pretrained) if cfg.pretrained else train_tiny_tokenizer()
    add_seg_token(tokenizer)
    return tokenizer


class LanguageModel(nn.Module):
    """A causal LM used through ``inputs_embeds``; ``hidden`` runs the decoder, ``logits`` its head.

    Running the decoder and the head separately lets generation apply the head to the last position only
    (the paper's prefill is ~3400 tokens × a 32k vocabulary) and gives the last-layer (post-norm) hidden states
    the L→V adapter needs without asking for every layer.
    """

    def __init__(self, cfg: LanguageModelConfig, model: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.lora_applied = False

    # -------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, cfg: LanguageModelConfig, tokenizer, *, load_pretrained: bool = False,
                    torch_dtype: torch.dtype | None = None, model: nn.Module | None = None) -> "LanguageModel":
        """Build the LLM for ``tokenizer`` (vocabulary resized to include ``[SEG]``) and apply LoRA if configured.

        ``model``: an already loaded causal LM to wrap (e.g. by ``vglamm.conversion`` after merging a LoRA).
        """
        if model is not None or (load_pretrained and cfg.pretrained):
            if model is None:
                model = AutoModelForCausalLM.from_pretrained(cfg.pretrained, dtype=torch_dtype)
            skip = {"architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype", "id2label",
                    "label2id", "auto_map"}
            cfg.llm_config = {k: v for k, v in model.config.to_dict().items() if k not in skip}
        else:
            kwargs = dict(cfg.llm_config)
            model_type = kwargs.pop("model_type")
            kwargs.setdefault("vocab_size", len(tokenizer))
            for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
                if getattr(tokenizer, name, None) is not None:
                    kwargs.setdefault(name, getattr(tokenizer, name))
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs))
        # The reference resizes to len(tokenizer) (Phi-3's padded 32064 rows shrink); kept for checkpoint parity.
        if model.get_input_embeddings().num_embeddings != len(tokenizer):
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        cfg.llm_config["vocab_size"] = len(tokenizer)
        lm = cls(cfg, model)
        if cfg.use_lora:
            lm.apply_lora()
        return lm

    def apply_lora(self) -> None:
        """Insert LoRA layers in place (parameter names keep the HF layout plus ``lora_A/B``)."""
        from peft import LoraConfig, inject_adapter_in_model

        if self.lora_applied:
            return
        lora = LoraConfig(r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha, lora_dropout=self.cfg.lora_dropout,
                          target_modules=list(self.cfg.lora_targets), bias="none")
        inject_adapter_in_model(lora, self.model)
        self.lora_applied = True

    def merge_lora(self) -> None:
        """Fold LoRA into the base weights and remove the LoRA layers (faster inference, plain HF names)."""
        from peft.tuners.lora import LoraLayer

        if not self.lora_applied:
            return
        for name, module in list(self.model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                setattr(self.model.get_submodule(parent_name), child, module.get_base_layer())
        self.lora_applied = False
        self.cfg.use_lora = False

    # -------------------------------------------------------------- access
    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def lm_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    @property
    def decoder(self) -> nn.Module:
        return self.model.get_decoder()

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def hidden(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
               position_ids: torch.Tensor | None = None, past_key_values=None, use_cache: bool = False):
        """Last-layer hidden states (post final norm) and the updated cache."""
        out = self.decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                           past_key_values=past_key_values, use_cache=use_cache)
        return out.last_hidden_state, out.past_key_values

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)
