"""Training losses: next-token cross-entropy on answer tokens, per-frame mask BCE and Dice (LISA definitions), and
an optional regression of ``[SEG]`` prompts onto given targets (a teacher's prompts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vglamm.modeling.configuration import IGNORE_INDEX


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE of predicting ``labels[:, t+1]`` from ``logits[:, t]`` over labelled positions (0 when none)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    if not (shift_labels != IGNORE_INDEX).any():
        return shift_logits.sum() * 0.0
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def sigmoid_bce_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ over masks of the mean per-pixel BCE. logits, targets: (M,h,w), one row per (object, frame)."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return loss.flatten(1).mean(1).sum()


def dice_sum(logits: torch.Tensor, targets: torch.Tensor, scale: float = 1000.0, eps: float = 1e-6) -> torch.Tensor:
    """Σ over masks of the Dice loss, LISA's form: probabilities and targets divided by ``scale``
    (keeps the sums small), ``eps`` in numerator and denominator (an empty target and empty prediction give 0)."""
    probs = logits.float().sigmoid().flatten(1)
    targets = targets.float().flatten(1)
    numerator = 2 * (probs / scale * targets).sum(-1)
    denominator = (probs / scale).sum(-1) + (targets / scale).sum(-1)
    return (1 - (numerator + eps) / (denominator + eps)).sum()


def mask_losses(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE and mean Dice over every (object, frame) pair of a batch.

    logits / targets: one (K_i,T_i,h,w) tensor per sample. Returns zeros (keeping the graph) when there are no masks.
    """
    bce, dice, count = None, None, 0
    for lg, tg in zip(logits, targets):
        if lg.numel() == 0:
            continue
        if lg.shape != tg.shape:
            raise ValueError(f"mask logits {tuple(lg.shape)} and targets {tuple(tg.shape)} differ")
        flat_l, flat_t = lg.flatten(0, 1), tg.flatten(0, 1).to(lg.device)
        b, d = sigmoid_bce_sum(flat_l, flat_t), dice_sum(flat_l, flat_t)
        bce = b if bce is None else bce + b
        dice = d if dice is None else dice + d
        count += flat_l.shape[0]
    if count == 0:
        zero = sum((lg.sum() * 0.0 for lg in logits), torch.zeros(()))
        return zero, zero
    return bce / count, dice / count


def prompt_regression_loss(prompts: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error between ``[SEG]`` prompts (S, D) and target prompts (S, D); rows of NaN in ``targets``
    are unsupervised. Returns zero (keeping the graph) when no row is supervised."""
    if prompts.shape != targets.shape:
        raise ValueError(f"prompts {tuple(prompts.shape)} and prompt targets {tuple(targets.shape)} differ")
    valid = ~torch.isnan(targets).any(-1).to(prompts.device)
    if not valid.any():
        return prompts.sum() * 0.0
    return F.mse_loss(prompts[valid].float(), targets.to(prompts.device)[valid].float())


def readout_attention_loss(attention: torch.Tensor, targets: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean KL(target || attention) over ``[SEG]`` rows: ``attention`` (S, V) the L->V readout's weights over the
    visual tokens (rows sum to 1), ``targets`` (S, V) where each row's object is (rows sum to 1; NaN rows are
    unsupervised). Zero when it is on the object's tokens in their proportions. Returns zero (keeping the graph)
    when no row is supervised."""
    if attention.shape != targets.shape:
        raise ValueError(f"readout attention {tuple(attention.shape)} and targets {tuple(targets.shape)} differ")
    targets = targets.to(attention.device).float()
    valid = ~torch.isnan(targets).any(-1)
    if not valid.any():
        return attention.sum() * 0.0
    q, a = targets[valid], attention[valid].float()
    return (q * (torch.log(q + eps) - torch.log(a + eps))).sum(-1).mean()
