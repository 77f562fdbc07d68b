"""Stage 0 of the default model: teach a from-scratch SAM2 to follow prompts before the LLM talks to it.

Meta's SAM2 arrives promptable; ours starts from random weights. Trained end to end from step 0, it first learns
"segment the salient objects" while the ``[SEG]`` prompts of a clip's expressions are still nearly identical, and
then unlearns it slowly (issue 7's diagnosis). Here SAM2 instead learns, on the synthetic world's training split,
to segment the object a *perfect description* names: every object of a clip is prompted by the sum of learnable
colour, category and size embeddings, one prompt token in the slot the L->V adapter fills later. The full model
then starts from a decoder that already selects objects by their prompt, and its L->V adapter only has to learn
to write into that prompt space.

    decoder = model.pixel_decoder
    history = pretrain_pixel_decoder(decoder, PromptPretrainConfig(steps=2000))

The trainer runs this before its first stage when a recipe has a ``prompt_pretrain:`` section.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from training.trainer import average_gradients, warmup_linear_decay
from vglamm.errors import ConfigError
from vglamm.evaluation.vos import region_similarity
from vglamm.modeling.losses import mask_losses

from .generate import clip_seed, make_clip
from .language import ATTRIBUTES, matching
from .world import CATEGORIES, PALETTE, SceneObject, WorldConfig

__all__ = ["AttributePrompts", "PromptPretrainConfig", "attach_prompt_targets", "description_loss",
           "pretrain_pixel_decoder"]


@dataclass
class PromptPretrainConfig:
    """SAM2 prompt pre-training on the synthetic world (all objects of ``clips_per_step`` clips per step)."""

    steps: int = 2000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # linear decay from lr to lr * min_lr_ratio over the steps (after 50 warm-up steps)
    clips_per_step: int = 2
    frames: int = 4  # frames of each clip decoded per step (a sorted random subset)
    mode: str = "temporal"  # "temporal" also trains SAM2's memory; "framewise" is ~2x faster per step
    # "full": colour + category + size every time; "partial": a random subset of them that still names the object
    # alone in its clip ("the red one", "the large car"), as the referring expressions do
    descriptions: str = "full"
    bce_weight: float = 2.0  # the model's own mask-loss weights
    dice_weight: float = 0.5
    world_seed: int = 0  # clips come from this world's *train* split, never the held-out one
    world: dict = field(default_factory=lambda: {"num_frames": 8, "height": 128, "width": 128})
    seed: int = 0
    log_every: int = 50
    # Later stages: weight of the MSE pulling each [SEG]'s prompt (L->V output) towards this stage's description
    # of its object (a frozen teacher), so the LLM writes into the prompt space SAM2 learnt here. 0: off.
    distill_weight: float = 0.0
    # the [SEG]s distilled, by what they answer: "gcg" captions, "attribute" or "motion" referring expressions
    distill_kinds: tuple[str, ...] = ("gcg", "attribute", "motion")
    # what the target describes: "full" the object's colour + category + size; "stated" the attributes the [SEG]'s
    # phrase states when they single the object out ("the red object": colour), else the full description (e.g.
    # "the car moving left" beside another car), for a stage 0 trained on partial descriptions; "coloured" the
    # stated ones when they include the colour, else the full description: a stage 0 that leans on colours segments
    # from a description without one worst (category alone), so the L->V readout supplies the colour it sees;
    # "coloured_attributes" as "coloured" for attribute expressions and as "stated" for the rest (motion, captions)
    distill_onto: str = "full"
    # Later stages: weight of this stage's own loss on one training clip per micro-batch (its descriptions frozen),
    # added to each step, so SAM2 keeps following descriptions while it adapts to the LLM's prompts. 0: off.
    rehearse_weight: float = 0.0
    # Later stages: weight of the token probe's loss (training.synthetic.token_probe: linear heads read, from each
    # visual token of the last stream, the colour, category, size and motion of the object in its cell). 0: off.
    token_probe_weight: float = 0.0
    # a second phase run after this one on the same SAM2 and descriptions (fresh optimiser and schedule), with these
    # keys changed, e.g. {steps: 4000, lr: 5.0e-4, descriptions: partial, seed: 1} to refine full descriptions
    refine: dict | None = None

    def validate(self) -> None:
        if self.steps < 1 or self.clips_per_step < 1 or self.frames < 1:
            raise ConfigError(f"prompt_pretrain needs steps, clips_per_step and frames >= 1, got {self}")
        if self.mode not in ("temporal", "framewise"):
            raise ConfigError(f"prompt_pretrain.mode must be 'temporal' or 'framewise', got {self.mode!r}")
        if self.descriptions not in ("full", "partial"):
            raise ConfigError(f"prompt_pretrain.descriptions must be 'full' or 'partial', got {self.descriptions!r}")
        weights = {"distill_weight": self.distill_weight, "rehearse_weight": self.rehearse_weight,
                   "token_probe_weight": self.token_probe_weight}
        if min(weights.values()) < 0:
            raise ConfigError(f"prompt_pretrain weights must be >= 0, got {weights}")
        if self.distill_onto not in DISTILL_ONTO:
            raise ConfigError(f"prompt_pretrain.distill_onto must be one of {DISTILL_ONTO}, got {self.distill_onto!r}")
        if not set(self.distill_kinds) <= set(SEG_KINDS):
            raise ConfigError(f"prompt_pretrain.distill_kinds must be among {SEG_KINDS}, got {self.distill_kinds}")
        if self.frames > WorldConfig(**self.world).num_frames:
            raise ConfigError(f"prompt_pretrain.frames={self.frames} exceeds the world's num_frames")
        if self.refine is not None:
            self.refined().validate()

    def refined(self) -> "PromptPretrainConfig":
        """The settings of the ``refine`` phase: these with its keys changed."""
        from training.recipe import _typed

        if not isinstance(self.refine, dict) or "refine" in self.refine:
            raise ConfigError(f"prompt_pretrain.refine must be a mapping of settings (one phase), got {self.refine!r}")
        return dataclasses.replace(self, refine=None, **_typed(PromptPretrainConfig, self.refine))


SEG_KINDS = ("gcg", "attribute", "motion")
DISTILL_ONTO = ("full", "stated", "coloured", "coloured_attributes")


class AttributePrompts(nn.Module):
    """An object's prompt = the sum of its colour, category and size embeddings (or of those ``keep`` names): a
    perfect description in SAM2's prompt space."""

    def __init__(self, dim: int):
        super().__init__()
        self.colours, self.categories = list(PALETTE), list(CATEGORIES)
        self.colour = nn.Embedding(len(self.colours), dim)
        self.category = nn.Embedding(len(self.categories), dim)
        self.size = nn.Embedding(2, dim)
        for table in (self.colour, self.category, self.size):
            nn.init.normal_(table.weight, std=0.6)  # sums of three have roughly unit scale per channel

    def forward(self, objects: Sequence[SceneObject], keep: Sequence[Sequence[str]] | None = None) -> torch.Tensor:
        device = self.colour.weight.device
        keep = keep or [ATTRIBUTES] * len(objects)

        def term(table, index, name):
            ids = torch.tensor([index(o) for o in objects], device=device)
            on = torch.tensor([[float(name in k)] for k in keep], device=device)
            return table(ids) * on

        return (term(self.colour, lambda o: self.colours.index(o.colour), "colour")
                + term(self.category, lambda o: self.categories.index(o.category), "category")
                + term(self.size, lambda o: int(o.size == "large"), "size"))


@torch.no_grad()
def attach_prompt_targets(prompts: AttributePrompts, samples, kinds: Sequence[str] = SEG_KINDS,
                          onto: str = "full") -> None:
    """Set ``meta["prompt_targets"]`` of each synthetic sample: one row per ``[SEG]``, the description of its object
    (``meta["seg_objects"]``): the full one, or (``onto="stated"``) that of ``meta["seg_described"]``, what its
    phrase says of it, or (``onto="coloured"``) that when it names the colour and the full one when it does not
    (``onto="coloured_attributes"``: so for attribute expressions, "stated" for the other kinds).
    NaN (unsupervised) for a group of objects, a [SEG] without a phrase (unless ``onto="full"``), or one whose kind
    (``meta["seg_kinds"]``) is not in ``kinds``. Samples without ``seg_objects`` are left alone."""
    def described(said, kind):
        if said is None:
            return ()
        coloured = onto == "coloured" or (onto == "coloured_attributes" and kind == "attribute")
        if coloured and "colour" not in said:
            return ATTRIBUTES
        return tuple(a for a in ATTRIBUTES if a in said)

    for s in samples:
        objects = s.meta.get("seg_objects")
        if objects is None:
            continue
        keep = ([ATTRIBUTES] * len(objects) if onto == "full"
                else [described(said, kind) for said, kind in zip(s.meta["seg_described"], s.meta["seg_kinds"])])
        rows = np.full((len(objects), prompts.colour.embedding_dim), np.nan, np.float32)
        known = [i for i, (o, k) in enumerate(zip(objects, s.meta["seg_kinds"])) if o is not None and k in kinds
                 and keep[i]]
        if known:
            rows[known] = prompts([objects[i] for i in known], [keep[i] for i in known]).float().cpu().numpy()
        s.meta["prompt_targets"] = rows


def unique_descriptions(scene, obj: SceneObject) -> list[tuple[str, ...]]:
    """The non-empty subsets of (colour, category, size) that match ``obj`` and no other object of ``scene``."""
    subsets = [tuple(a for j, a in enumerate(ATTRIBUTES) if m >> j & 1) for m in range(1, 2 ** len(ATTRIBUTES))]
    return [keys for keys in subsets if matching(scene, {k: getattr(obj, k) for k in keys}) == [obj.obj_id]]


def description_loss(decoder, prompts: AttributePrompts, cfg: PromptPretrainConfig, index: int,
                     rng: np.random.Generator):
    """Stage 0's loss on training clip ``index`` of ``cfg``'s world: SAM2 segmenting each of its objects from its
    description (``cfg.frames`` random frames, ``cfg.descriptions``). -> (loss, low-res logits (N,T,h,w) at the
    masks' size, target masks (N,T,h,w))."""
    device = decoder.pixel_mean.device
    world = WorldConfig(**cfg.world)
    clip = make_clip(clip_seed(cfg.world_seed, "train", index), world)
    idx = np.sort(rng.choice(world.num_frames, cfg.frames, replace=False))
    objects = clip.scene.objects
    target = torch.as_tensor(np.stack([clip.object_masks(o.obj_id)[idx] for o in objects]), device=device)
    feats = decoder.encode_frames(decoder.preprocess(clip.frames[idx]))
    keep = None
    if cfg.descriptions == "partial":
        options = [unique_descriptions(clip.scene, o) for o in objects]
        keep = [opts[rng.integers(len(opts))] for opts in options]
    logits = decoder.decode(feats, prompts(objects, keep), mode=cfg.mode)
    logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    bce, dice = mask_losses([logits], [target.float()])
    return cfg.bce_weight * bce + cfg.dice_weight * dice, logits, target


def pretrain_pixel_decoder(decoder, cfg: PromptPretrainConfig, progress: bool = True,
                           prompts: AttributePrompts | None = None, data_parallel: bool = False) -> list[dict]:
    """Train ``decoder`` (a SAM2PixelDecoder, in place) to segment attribute-prompted objects.

    ``prompts``: the attribute embeddings to train alongside (in place; new ones when None), e.g. to keep them.
    ``data_parallel``: inside a torch process group of several ranks, each rank takes ``clips_per_step`` clips of
    its own per step and the gradients are averaged (the log is rank 0's); the clips a step draws over all ranks are
    those one process with ``clips_per_step x ranks`` would draw.

    Runs ``cfg.refine`` after ``cfg`` when set. Returns the log: one row per ``log_every`` steps with the mean loss
    and the mean IoU of the masks the decoder predicted at those steps (every object and frame, at mask resolution;
    an empty prediction of an absent object counts 1). Deterministic given ``cfg.seed`` and ``cfg.world_seed``.
    """
    cfg.validate()
    device = decoder.pixel_mean.device
    rank, world = 0, 1
    if data_parallel and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    torch.manual_seed(cfg.seed)  # the same fresh prompts on every rank
    rng = np.random.default_rng(cfg.seed if world == 1 else [cfg.seed, rank])
    prompts = (prompts or AttributePrompts(decoder.cfg.prompt_dim)).to(device)
    params = [p for p in decoder.parameters() if p.requires_grad] + list(prompts.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    warmup = min(50, cfg.steps)

    decoder.train()
    history, losses, ious = [], [], []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="SAM2 prompt pre-training", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * warmup_linear_decay(step, cfg.steps, warmup, cfg.min_lr_ratio)
        step_loss = 0.0
        for c in range(cfg.clips_per_step):
            index = (step * cfg.clips_per_step + c) * world + rank
            loss, logits, target = description_loss(decoder, prompts, cfg, index, rng)
            (loss / cfg.clips_per_step).backward()
            step_loss += loss.item() / cfg.clips_per_step
            pred, truth = (logits.detach() > 0).cpu().numpy(), target.bool().cpu().numpy()
            ious += [j for n in range(len(target)) for j in region_similarity(truth[n], pred[n])]
        if world > 1:
            average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": step + 1, "loss": float(np.mean(losses)), "iou": float(np.mean(ious)),
                   "seconds": round(time.perf_counter() - start, 1)}
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", iou=f"{row['iou']:.3f}")
            losses, ious = [], []
    if cfg.refine is not None:  # the second phase continues the log
        more = pretrain_pixel_decoder(decoder, cfg.refined(), progress, prompts, data_parallel)
        history += [{**r, "step": r["step"] + cfg.steps, "seconds": r["seconds"] + history[-1]["seconds"]}
                    for r in more]
    return history

