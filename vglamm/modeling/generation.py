"""Token generation over ``inputs_embeds`` with a KV cache, collecting the hidden states that predict ``[SEG]``.

The reference generates with ``use_cache=False`` and re-encodes the video for every token. Here the video is
encoded once, the prompt (visual tokens included) is prefilled once, and each step feeds one token against the
cache. The hidden state that *predicts* a token is the last-layer state of the position before it, so when the
step's argmax/sample is ``[SEG]`` the state just used is recorded: it is exactly what the training forward
extracts at the position preceding each ``[SEG]``.

``use_cache=False`` runs the same loop recomputing the whole sequence each step: the reference path for tests
and for the benchmark's speed-up figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from vglamm.modeling.language_model import LanguageModel


@dataclass
class GenerationResult:
    """Per row: the generated token ids (stop token included when reached) and one hidden state per [SEG];
    ``visual_tokens`` (B, V, D): what the LLM saw of each video (set by ``VideoGLaMM.generate_grounded``)."""

    tokens: list[list[int]]
    seg_hidden: list[list[torch.Tensor]]
    finished: list[bool] = field(default_factory=list)
    visual_tokens: torch.Tensor | None = None


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting only attended tokens (left padding gets position 0), as HF generation does."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp_(min=0)


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float,
          generator: torch.Generator | None) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    logits = logits.float() / max(temperature, 1e-5)
    probs = logits.softmax(-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(lm: LanguageModel, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, *, seg_token_id: int,
             stop_token_ids: set[int], pad_token_id: int, max_new_tokens: int, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, use_cache: bool = True,
             generator: torch.Generator | None = None) -> GenerationResult:
    """Decode up to ``max_new_tokens`` after a left-padded prompt given as embeddings (B,L,D) + mask (B,L)."""
    b = inputs_embeds.shape[0]
    tokens: list[list[int]] = [[] for _ in range(b)]
    seg_hidden: list[list[torch.Tensor]] = [[] for _ in range(b)]
    finished = torch.zeros(b, dtype=torch.bool, device=inputs_embeds.device)
    mask = attention_mask
    positions = position_ids_from_mask(mask)

    # 1. Prefill: one pass over the prompt (all visual tokens); only the last position needs the head.
    cache = DynamicCache(config=lm.model.config) if use_cache else None
    hidden, cache = lm.hidden(inputs_embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
                              use_cache=use_cache)
    last = hidden[:, -1]
    embeds = inputs_embeds

    # 2. Decode loop: pick, record [SEG]-predicting states, feed the token back.
    for _ in range(max_new_tokens):
        nxt = _pick(lm.logits(last), do_sample, temperature, top_p, generator)
        nxt = torch.where(finished, torch.full_like(nxt, pad_token_id), nxt)
        for i in range(b):
            if finished[i]:
                continue
            tok = int(nxt[i])
            tokens[i].append(tok)
            if tok == seg_token_id:
                seg_hidden[i].append(last[i].clone())
            if tok in stop_token_ids:
                finished[i] = True
        if bool(finished.all()):
            break
        new_embed = lm.embed(nxt[:, None])
        mask = torch.cat([mask, (~finished).long()[:, None]], dim=1)
        step_pos = positions[:, -1:] + 1
        positions = torch.cat([positions, step_pos], dim=1)
        if use_cache:
            hidden, cache = lm.hidden(new_embed, attention_mask=mask, position_ids=step_pos, past_key_values=cache,
                                      use_cache=True)
        else:
            embeds = torch.cat([embeds, new_embed], dim=1)
            hidden, _ = lm.hidden(embeds, attention_mask=mask, position_ids=positions)
        last = hidden[:, -1]
    return GenerationResult(tokens, seg_hidden, [bool(f) for f in finished])
