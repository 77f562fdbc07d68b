"""The training loop, readable in one sitting.

    recipe → model → data mixture → optimiser + schedule → (DeepSpeed engine) → loop:
        draw micro-batches → processor → model(batch) → backward → (average over ranks) → clip → step → log
        → checkpoint
    → export (LoRA merged, `from_pretrained` directory)

Exact resume: the data drawn at a step and every random number used in it are functions of (seed, step, rank)
only, and a checkpoint holds the model, optimiser, schedule and step. So a run killed and resumed from its last
checkpoint reaches the same weights as one that never stopped.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from training.recipe import TrainConfig
from vglamm.errors import ConfigError, MissingWeightsError

CHECKPOINT_PREFIX = "checkpoint-"


# ----------------------------------------------------------------------------------------------- set-up helpers
def build_model(cfg: TrainConfig):
    """A preset name builds fresh weights from its config; anything else is a `from_pretrained` source.

    `model_overrides` are dotted config keys (``"trainable": "all"``, ``"language_model.lora_r": 16``).
    """
    from vglamm.modeling import VideoGLaMM, VideoGLaMMConfig

    if cfg.model in ("tiny", "paper"):
        model_cfg = apply_overrides(VideoGLaMMConfig.preset(cfg.model), cfg.model_overrides)
        return VideoGLaMM.from_config(model_cfg, load_components=cfg.model == "paper")
    model = VideoGLaMM.from_pretrained(cfg.model, device="cpu")
    if "language_model.use_lora" in (cfg.model_overrides or {}) and cfg.model_overrides["language_model.use_lora"]:
        model.language_model.apply_lora()  # fine-tuning a merged model: fresh LoRA layers on top
    apply_overrides(model.cfg, cfg.model_overrides)
    model.set_trainable()
    return model


def apply_overrides(config, overrides: dict):
    """Set dotted keys (``"language_model.lora_r": 16``) on a nested dataclass config, checking each key exists."""
    import dataclasses

    pending = list((overrides or {}).items())
    while pending:
        key, value = pending.pop(0)
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p, None)
        if not dataclasses.is_dataclass(node) or leaf not in {f.name for f in dataclasses.fields(node)}:
            raise ConfigError(f"model override {key!r} names no setting of the model config")
        if isinstance(value, dict) and dataclasses.is_dataclass(getattr(node, leaf)):  # {adapters: {video_pool: 8}}
            pending += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            setattr(node, leaf, value)
    config.validate()
    return config


def build_stage_data(cfg: TrainConfig, rank: int):
    """One `MixtureDataset` per stage; a dataset named by several stages is built once and shared.

    `mixture[i]` is the i-th sample of the run, a pure function of (seed, i, rank): that is what makes resume exact.
    """
    from training.data import build_dataset
    from training.data.mixture import MixtureDataset

    cache: dict[str, object] = {}
    stages = []
    for stage in cfg.stages:
        entries = []
        for spec in stage.datasets:
            key = json.dumps([spec.loader, spec.root, spec.options], sort_keys=True)
            if key not in cache:
                cache[key] = build_dataset(spec.loader, spec.root, **spec.options)
            entries.append((cache[key], spec.rate))
        stages.append(MixtureDataset(entries, seed=cfg.seed, rank=rank, skip_errors=cfg.skip_bad_records))
    return stages


class MicroBatches(torch.utils.data.Dataset):
    """Item k: the samples of the run's k-th micro-batch (step k // grad_accum), drawn from its stage's mixture by
    index alone, so a data-loader worker draws exactly what the training process would."""

    def __init__(self, cfg: TrainConfig, stage_data: list):
        self.cfg, self.stage_data = cfg, stage_data

    def __len__(self) -> int:
        return self.cfg.total_steps * self.cfg.optim.grad_accum

    def __getitem__(self, k: int) -> list:
        o = self.cfg.optim
        mixture = self.stage_data[self.cfg.stage_index(k // o.grad_accum)]
        return [mixture[k * o.batch_size + j] for j in range(o.batch_size)]


def _as_drawn(samples: list) -> list:
    return samples  # no collation: the model's processor batches GroundedSamples itself


def micro_batches(cfg: TrainConfig, stage_data: list, start: int):
    """The micro-batches from optimiser step ``start`` on, in order: drawn in this process when the loop asks for
    them (``num_workers: 0``), or ahead of it by ``cfg.num_workers`` data-loader processes."""
    data = MicroBatches(cfg, stage_data)
    todo = range(start * cfg.optim.grad_accum, len(data))
    if not cfg.num_workers:
        return (data[k] for k in todo)
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=todo, num_workers=cfg.num_workers,
                                         collate_fn=_as_drawn, generator=torch.Generator().manual_seed(cfg.seed))
    return iter(loader)


def seed_everything(*key: int) -> None:
    """Seed every generator from a key such as (seed, step, rank), so a resumed step replays the same randomness."""
    s = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then linear decay to `min_lr_ratio` at the last step (the paper's WarmupDecayLR)."""
    o = cfg.optim
    return warmup_linear_decay(step, cfg.total_steps, o.warmup_steps, o.min_lr_ratio)


def warmup_linear_decay(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """The factor of the learning rate at 0-based `step`: (step+1)/warmup, then 1 decaying to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - (1.0 - min_ratio) * progress


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def subsample_mask_frames(batch: dict, frames: int, rng: np.random.Generator) -> dict:
    """Keep ``frames`` of each sample's SAM2 frames and target masks (a sorted random subset; all of a shorter
    clip), leaving the LLM's inputs whole. -> the batch, changed in place."""
    keep = [np.sort(rng.choice(len(p), frames, replace=False)) if len(p) > frames else np.arange(len(p))
            for p in batch["sam_pixels"]]
    batch["sam_pixels"] = [p[torch.as_tensor(k)] for p, k in zip(batch["sam_pixels"], keep)]
    batch["target_masks"] = [m[:, torch.as_tensor(k)] for m, k in zip(batch["target_masks"], keep)]
    if "sam_llm_frames" in batch:
        batch["sam_llm_frames"] = [f[torch.as_tensor(k)] for f, k in zip(batch["sam_llm_frames"], keep)]
    return batch


def _distributed_env() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _join_process_group(device: torch.device) -> None:
    """Join the launcher's process group (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT): gloo on a CPU."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Data parallelism for the torch backend: replace every rank's gradients by their mean over the ranks (one
    all-reduce of a flat buffer). A parameter without a gradient on some rank counts as zero there, so every rank
    applies the same update and the replicas stay identical."""
    world = torch.distributed.get_world_size()
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def _check_replicas_agree(params: list[torch.nn.Parameter]) -> None:
    """Raise if the ranks' weights differ (they start from the same seed and apply the same averaged updates)."""
    total = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1)
    low, high = total.clone(), total.clone()
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"the ranks' weights diverged (parameter sums {low.item()} .. {high.item()}); "
                           "a rank must have skipped a step or drawn a different model")


def new_token_probe(cfg: TrainConfig, model, device):
    """The token probe's heads, seeded by the recipe alone: stage 0 draws dropout masks of clip-dependent sizes,
    so the global generator differs between ranks (and between a run and its resume) when the probe is built.
    -> (probe, pool: the grid side of the stream it reads)."""
    from training.synthetic.token_probe import TokenProbe

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        probe = TokenProbe(model.cfg.language_model.hidden_size).to(device)
    a = model.cfg.adapters
    return probe, a.video_pool if model.cfg.use_video_encoder else a.image_pool


# ----------------------------------------------------------------------------------------------- one micro-batch
@dataclass
class Objectives:
    """What the recipe adds to the model's own loss (CE + BCE + Dice): from stage 0, the [SEG] prompts pulled
    towards its descriptions (``teacher``), rehearsal of stage 0 itself and the token probe; and the L->V readout's
    attention pulled onto each [SEG]'s object (``readout``: its weight, training.readout_supervision)."""

    stage0: Any = None  # PromptPretrainConfig, or None for a recipe without stage 0
    teacher: Any = None  # stage 0's descriptions (a frozen AttributePrompts)
    probe: Any = None  # TokenProbe heads, or None
    probe_pool: int = 0  # the grid side of the visual-token stream the probe reads
    readout: float = 0.0

    @property
    def distill(self) -> float:
        return self.stage0.distill_weight if self.stage0 is not None else 0.0

    @property
    def rehearse(self) -> float:
        return self.stage0.rehearse_weight if self.stage0 is not None else 0.0


def micro_batch_loss(model, samples: list, spec, objectives: Objectives, cfg: TrainConfig, *, step: int,
                     micro: int = 0, rank: int = 0, world: int = 1, device=torch.device("cpu"), forward=None,
                     autocast=None, mark: Callable[[str], None] = lambda part: None):
    """The loss of one micro-batch of stage ``spec`` as the loop takes it, and its parts (tensors or None, for the
    log). Every random number it draws is a function of (seed, step, rank, micro) only, so resume stays exact.

    ``forward``: what runs the model (a DeepSpeed engine), ``model`` itself by default; ``mark(part)`` is called as
    the forward, rehearsal and probe parts start (benchmarks/bench_training.py times them)."""
    ob = objectives
    if ob.distill:
        from training.synthetic.prompt_pretrain import attach_prompt_targets

        attach_prompt_targets(ob.teacher, samples, ob.stage0.distill_kinds, ob.stage0.distill_onto)
    batch = model.processor(samples, device=device)  # frames resized on the device: the host's biggest cost on a GPU
    if ob.readout:  # where each [SEG]'s object is among the visual tokens, for the readout's attention
        from training.readout_supervision import readout_targets

        batch["readout_targets"] = readout_targets(samples, batch["num_seg"].tolist(), model.cfg)
    if spec.mask_frames and spec.decode_masks:
        subsample_mask_frames(batch, spec.mask_frames, np.random.default_rng([cfg.seed, step, rank, micro]))
    batch = to_device(batch, device)
    mark("forward")
    with autocast or contextlib.nullcontext():
        out = (forward or model)(batch, decode_masks=spec.decode_masks)
    parts = {k: getattr(out, k) for k in ("ce_loss", "bce_loss", "dice_loss", "prompt_loss", "readout_loss")}
    loss = out.loss + ob.distill * out.prompt_loss if out.prompt_loss is not None else out.loss
    if out.readout_loss is not None:
        loss = loss + ob.readout * out.readout_loss
    mark("rehearsal")
    if ob.rehearse and spec.decode_masks:  # one stage-0 clip per micro-batch, its own seeded frames and descriptions
        from training.synthetic.prompt_pretrain import description_loss

        index = (step * cfg.optim.grad_accum + micro) * world + rank
        parts["rehearse_loss"], _, _ = description_loss(model.pixel_decoder, ob.teacher, ob.stage0, index,
                                                        np.random.default_rng([cfg.seed, index]))
        loss = loss + ob.rehearse * parts["rehearse_loss"]
    mark("probe")
    if ob.probe is not None:  # the last stream's tokens: per frame, a probe_pool x probe_pool grid
        stream = out.visual_tokens[:, -model.cfg.num_frames * ob.probe_pool ** 2:]
        parts["probe_loss"] = ob.probe.loss(stream, samples, ob.probe_pool)
        if parts["probe_loss"] is not None:
            loss = loss + ob.stage0.token_probe_weight * parts["probe_loss"]
    return loss, parts


# ----------------------------------------------------------------------------------------------- stage 0
PROMPT_PRETRAIN_FILE = "prompt_pretrain/pixel_decoder.safetensors"
ATTRIBUTE_PROMPTS_FILE = "attribute_prompts.safetensors"  # stage 0's learnt descriptions, next to its SAM2 weights


def prompt_pretrain_stage(cfg: TrainConfig, model, out_dir: Path, rank: int, resuming: bool, progress: bool):
    """Run stage 0 once per run folder: pre-train SAM2 (training.synthetic.prompt_pretrain), rank 0 saving it
    with its log and descriptions; every later start or resume of the run loads those files instead of training.

    Returns stage 0's descriptions (a frozen AttributePrompts), or None for a run folder saved before they were kept.

    With the torch backend and several ranks, each rank draws its own clips and the gradients are averaged (data
    parallel, like the later stages). With DeepSpeed every rank trains the same seeded stage itself (DeepSpeed
    broadcasts rank 0's weights when it wraps the model), so no rank waits on a file another one writes before the
    process group exists.
    """
    from safetensors.torch import load_file, save_file

    from training.synthetic.prompt_pretrain import AttributePrompts, pretrain_pixel_decoder
    from vglamm.io.atomic import atomic_path

    path = out_dir / PROMPT_PRETRAIN_FILE
    decoder = model.pixel_decoder
    device = next(decoder.parameters()).device
    prompts = AttributePrompts(decoder.cfg.prompt_dim).to(device)
    if path.exists():
        # Stage 0 never trains the location prompt (it has no readout), so a stage-0 file from a decoder without
        # one is the same start, with the vector at its zero.
        missing, unexpected = decoder.load_state_dict(load_file(str(path), device=str(device)), strict=False)
        if unexpected or set(missing) - {"location_embed"}:
            raise MissingWeightsError(f"{path} does not match this recipe's SAM2: missing {sorted(missing)[:3]}, "
                                      f"unexpected {sorted(unexpected)[:3]}")
        if missing:
            with torch.no_grad():
                decoder.location_embed.zero_()
        kept = path.parent / ATTRIBUTE_PROMPTS_FILE
        if not kept.exists():
            return None
        prompts.load_state_dict(load_file(str(kept), device=str(device)))
        return prompts.requires_grad_(False)
    if resuming:
        raise MissingWeightsError(f"this recipe has a prompt_pretrain stage but {path} is missing, so the resumed "
                                  "run cannot rebuild its SAM2 start; resume with the run's own out_dir")
    # Stage 0 trains all of SAM2 even when the recipe freezes it for the later stages (its trainable set).
    frozen = [p for p in decoder.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        history = pretrain_pixel_decoder(decoder, cfg.prompt_pretrain_config(), progress=progress and rank == 0,
                                         prompts=prompts, data_parallel=cfg.backend == "torch")
    finally:
        for p in frozen:
            p.requires_grad_(False)
    if rank == 0:
        with atomic_path(path.parent / "history.json") as tmp:
            tmp.write_text(json.dumps(history, indent=1))
        with atomic_path(path.parent / ATTRIBUTE_PROMPTS_FILE) as tmp:  # for the perfect-description eval
            save_file({k: v.detach().cpu().clone() for k, v in prompts.state_dict().items()}, str(tmp))
        with atomic_path(path) as tmp:  # the weights last: their presence means stage 0 is complete
            save_file({k: v.detach().cpu().clone() for k, v in decoder.state_dict().items()}, str(tmp))
    return prompts.requires_grad_(False)


# ----------------------------------------------------------------------------------------------- checkpoints
def list_checkpoints(out_dir: Path) -> list[Path]:
    found = [p for p in out_dir.glob(f"{CHECKPOINT_PREFIX}*") if (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def latest_checkpoint(path: Path) -> Path:
    """`path` is a checkpoint folder, or a run folder whose newest complete checkpoint is taken."""
    path = Path(path)
    if (path / "trainer_state.json").exists():
        return path
    found = list_checkpoints(path)
    if not found:
        raise MissingWeightsError(f"no complete checkpoint under {path}: nothing to resume from "
                                  f"(checkpoints are folders named {CHECKPOINT_PREFIX}<step> with trainer_state.json)")
    return found[-1]


def save_checkpoint(out_dir: Path, step: int, model, optimizer, scheduler, engine, cfg: TrainConfig, rank: int,
                    probe=None):
    """Write into a temporary folder and rename it: a crash mid-write leaves the previous checkpoint intact.
    ``probe``: training-only heads outside the model (a TokenProbe), saved beside it."""
    final = out_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = out_dir / f".tmp-{CHECKPOINT_PREFIX}{step}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    if engine is not None:
        engine.save_checkpoint(str(tmp), tag="state")
    elif rank == 0:
        trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        torch.save({"model": trainable, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "probe": probe.state_dict() if probe is not None else None}, tmp / "state.pt")
    _barrier()
    if rank == 0:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "recipe": cfg.to_dict()}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in list_checkpoints(out_dir)[:-cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(ckpt: Path, model, optimizer, scheduler, engine, probe=None) -> int:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    if engine is not None:
        engine.load_checkpoint(str(ckpt), tag="state")
    else:
        blob = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        missing = model.load_state_dict(blob["model"], strict=False)
        if missing.unexpected_keys:
            raise MissingWeightsError(f"{ckpt} holds parameters this model lacks: {missing.unexpected_keys[:5]}")
        if probe is not None:
            if blob.get("probe") is None:
                raise MissingWeightsError(f"{ckpt} has no token-probe heads but the recipe trains them "
                                          "(prompt_pretrain.token_probe_weight): resume with the recipe it was saved by")
            probe.load_state_dict(blob["probe"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
    return int(state["step"])


def _barrier():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


# ----------------------------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig, resume: str | Path | None = None, progress: bool = True):
    """Run the recipe. Returns the trained model (rank 0 writes checkpoints, the loss log and the export)."""
    cfg.validate()
    out_dir = Path(cfg.out_dir)
    rank, world = _distributed_env()
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if world > 1 and cfg.backend == "torch":  # data parallel: every rank its own micro-batches, gradients averaged
        _join_process_group(device)

    # 1. Model and data.
    seed_everything(cfg.seed)  # model initialisation is identical on every rank and every resume
    model = build_model(cfg).to(device)
    objectives = Objectives()
    if cfg.readout_weight and not model.cfg.adapters.seg_attention_heads:  # before stage 0 spends its time
        raise ConfigError("readout_weight supervises the L->V adapter's visual readout, which this model lacks: set "
                          "model_overrides adapters.seg_attention_heads (e.g. 4) or readout_weight to 0")
    if cfg.prompt_pretrain is not None:  # stage 0: SAM2 learns to follow prompts before the LLM talks to it
        teacher = prompt_pretrain_stage(cfg, model, out_dir, rank, resuming=resume is not None, progress=progress)
        objectives = Objectives(cfg.prompt_pretrain_config(), teacher)
        if (objectives.distill or objectives.rehearse) and teacher is None:
            raise MissingWeightsError(f"prompt_pretrain.distill_weight and rehearse_weight need stage 0's "
                                      f"descriptions, {out_dir / PROMPT_PRETRAIN_FILE} has none beside it "
                                      f"({ATTRIBUTE_PROMPTS_FILE}): run stage 0 again in a fresh out_dir")
        if objectives.stage0.token_probe_weight:  # linear heads on the visual tokens (kept in checkpoints)
            if cfg.backend == "deepspeed":
                raise ConfigError("prompt_pretrain.token_probe_weight trains heads outside the model, which the "
                                  "deepspeed backend does not see: use backend: torch")
            objectives.probe, objectives.probe_pool = new_token_probe(cfg, model, device)
    objectives.readout = cfg.readout_weight
    probe = objectives.probe
    stage_data = build_stage_data(cfg, rank)

    # 2. Optimiser over the trainable parameters only (frozen ones get no state), and the schedule.
    params = [p for p in model.parameters() if p.requires_grad] + (list(probe.parameters()) if probe else [])
    if not params:
        raise ConfigError("the model has no trainable parameters: check `model_overrides` (trainable set)")
    o = cfg.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))

    # 3. DeepSpeed wraps model and optimiser when asked for (ZeRO, bf16, many GPUs or gloo on a CPU).
    engine = None
    if cfg.backend == "deepspeed":
        engine = _deepspeed_engine(cfg, model, optimizer, scheduler, device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if cfg.precision == "bf16" and engine is None else contextlib.nullcontext())

    # 4. Resume.
    start = 0
    if resume is not None:
        ckpt = latest_checkpoint(resume)
        start = load_checkpoint(ckpt, model, optimizer, scheduler, engine, probe)
        if rank == 0:
            print(f"resumed from {ckpt} at step {start}")
    log = _LossLog(out_dir / "log.csv", start) if rank == 0 else None

    # 5. The loop: one optimiser step per iteration, `grad_accum` micro-batches each.
    model.train()
    end = cfg.total_steps
    batches = micro_batches(cfg, stage_data, start)
    bar = tqdm(range(start, end), initial=start, total=cfg.total_steps, disable=not progress or rank != 0,
               desc="train")
    for step in bar:
        seed_everything(cfg.seed, step, rank)
        stage = cfg.stage_index(step)
        spec = cfg.stages[stage]
        t0 = time.perf_counter()
        totals: dict[str, float] = {}
        for micro in range(o.grad_accum):
            samples = next(batches)
            loss, parts = micro_batch_loss(model, samples, spec, objectives, cfg, step=step, micro=micro, rank=rank,
                                           world=world, device=device, forward=engine, autocast=autocast)
            for k, v in {"loss": loss, **parts}.items():
                if v is not None:
                    totals[k] = totals.get(k, 0.0) + float(v.detach()) / o.grad_accum
            if engine is not None:
                engine.backward(loss)
                engine.step()  # applies the update (with clipping) at the accumulation boundary only
            else:
                (loss / o.grad_accum).backward()
        if engine is None:
            if world > 1:
                average_gradients(params)
            if o.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if log is not None and (done % cfg.log_every == 0 or done == end):
            lr = engine.get_lr()[0] if engine is not None else scheduler.get_last_lr()[0]
            log.write(done, totals, lr, time.perf_counter() - t0)
            bar.set_postfix(loss=f"{totals['loss']:.3f}")
        if done % cfg.save_every == 0 or done == end:
            save_checkpoint(out_dir, done, model, optimizer, scheduler, engine, cfg, rank, probe)

    if engine is None and world > 1:
        _check_replicas_agree(params)

    # 6. Export a `from_pretrained` directory with LoRA merged.
    if cfg.export_dir and rank == 0:
        export(model, cfg.export_dir)
    # Every rank waits for the export: a rank that exits first and fails in its teardown makes torchrun stop the
    # others, rank 0's export with them (seen once at the end of an hour's polish).
    _barrier()
    return model


def export(model, out_dir: str | Path) -> Path:
    """Save a `VideoGLaMM.from_pretrained` directory with LoRA weights merged into the LLM."""
    import copy

    model = copy.deepcopy(model).cpu().eval()  # the caller's model keeps its LoRA layers
    model.language_model.merge_lora()
    return model.save_pretrained(out_dir)


def _deepspeed_engine(cfg: TrainConfig, model, optimizer, scheduler, device):
    import deepspeed

    if "RANK" not in os.environ:  # single process launched by hand: describe a one-process world
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    o = cfg.optim
    ds_config = {
        "train_micro_batch_size_per_gpu": o.batch_size,
        "gradient_accumulation_steps": o.grad_accum,
        "gradient_clipping": o.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage, "contiguous_gradients": True, "overlap_comm": True},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "steps_per_print": 10**9,
    }
    # A torch optimiser object, not an "optimizer" block: the block would JIT-compile C++ ops (a minute on CPU).
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    return engine


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _LossLog:
    """CSV loss log; on resume, rows past the resumed step are dropped so the log matches the weights."""

    FIELDS = ["step", "loss", "ce_loss", "bce_loss", "dice_loss", "prompt_loss", "rehearse_loss", "probe_loss",
              "readout_loss", "lr", "seconds"]

    def __init__(self, path: Path, start: int):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if path.exists() and start > 0:
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.FIELDS)
            w.writeheader()
            w.writerows(rows)

    def write(self, step: int, totals: dict, lr: float, seconds: float) -> None:
        row = {"step": step, "lr": f"{lr:.3e}", "seconds": f"{seconds:.3f}"}
        row.update({k: f"{v:.5f}" for k, v in totals.items()})
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.FIELDS).writerow(row)
