"""Time one optimiser step of each part of a training recipe (the default model's by default) on this machine.

    python benchmarks/bench_training.py                                   # training/configs/default_model.yaml
    python benchmarks/bench_training.py --recipe R.yaml --set stages.1.mask_frames=4 --steps 10

One process, one thread (the recipe runs one such process per core, data parallel), the model as the recipe builds
it with fresh weights (speed does not depend on them): stage 0's SAM2 step, then every stage's step as the trainer
takes it (distillation targets, rehearsal and the token probe when the recipe has them), split into forward (the
model; rehearsal; probe) and backward. The last column is the part's share of the run (its steps x its time per
step), so a recipe can be sized to a time budget before it runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from training.recipe import load_recipe
from training.trainer import (Objectives, build_model, build_stage_data, micro_batch_loss, new_token_probe,
                              seed_everything)


def stage0_step(model, phase, prompts, step: int) -> dict:
    """One clip of a stage-0 phase (`PromptPretrainConfig`): SAM2 segments its objects from their descriptions."""
    from training.synthetic.prompt_pretrain import description_loss

    t0 = time.perf_counter()
    loss, _, _ = description_loss(model.pixel_decoder, prompts, phase, step, np.random.default_rng(step))
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    return {"forward": t1 - t0, "backward": t2 - t1}


def stage_step(model, cfg, stage: int, mixture, objectives: Objectives, step: int) -> dict:
    """One micro-batch as `training.trainer.train` takes it (`micro_batch_loss`; grad_accum of them make a step)."""
    seed_everything(cfg.seed, step, 0)
    t = {"data": time.perf_counter()}

    def mark(part: str) -> None:
        t[part] = time.perf_counter()

    samples = [mixture[step * cfg.optim.batch_size + j] for j in range(cfg.optim.batch_size)]
    loss, _ = micro_batch_loss(model, samples, cfg.stages[stage], objectives, cfg, step=step, mark=mark)
    mark("backward")
    loss.backward()
    model.zero_grad(set_to_none=True)
    end = time.perf_counter()
    keys = list(t)
    return {k: (t[keys[i + 1]] if i + 1 < len(keys) else end) - t[k] for i, k in enumerate(keys)}


def mean_times(fn, steps: int) -> dict:
    fn(0)  # warm-up: first calls allocate and pick kernels
    rows = [fn(s) for s in range(1, steps + 1)]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="training/configs/default_model.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, repeatable")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per part (after one warm-up step)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    cfg = load_recipe(args.recipe, args.set)
    seed_everything(cfg.seed)
    model = build_model(cfg).train()
    stage0 = cfg.prompt_pretrain_config()
    objectives = Objectives()
    rows = []  # (part, steps, times)
    if stage0 is not None:
        from training.synthetic.prompt_pretrain import AttributePrompts

        prompts = AttributePrompts(model.pixel_decoder.cfg.prompt_dim)  # trained in stage 0
        teacher = AttributePrompts(model.pixel_decoder.cfg.prompt_dim).requires_grad_(False)  # frozen after it
        objectives = Objectives(stage0, teacher)
        if stage0.token_probe_weight:
            objectives.probe, objectives.probe_pool = new_token_probe(cfg, model, torch.device("cpu"))
        phases = [stage0] + ([stage0.refined()] if stage0.refine else [])
        for i, phase in enumerate(phases):
            times = mean_times(lambda s: stage0_step(model, phase, prompts, s), args.steps)
            times = {k: v * phase.clips_per_step for k, v in times.items()}
            rows.append((f"stage 0{' refine' if i else ''} ({phase.clips_per_step} clip x {phase.frames} frames)",
                         phase.steps, times))
    objectives.readout = cfg.readout_weight  # the readout targets' cost is part of each step
    data = build_stage_data(cfg, rank=0)
    for i, spec in enumerate(cfg.stages):
        times = mean_times(lambda s: stage_step(model, cfg, i, data[i], objectives, s), args.steps)
        times = {k: v * cfg.optim.grad_accum for k, v in times.items()}
        frames = f", SAM2 on {spec.mask_frames} frames" if spec.mask_frames and spec.decode_masks else ""
        what = "language only" if not spec.decode_masks else f"{cfg.optim.batch_size} clips{frames}"
        rows.append((f"{spec.name} ({what})", spec.steps, times))

    columns = ["data", "forward", "rehearsal", "probe", "backward"]
    total_run = sum(steps * sum(t.values()) for _, steps, t in rows)
    print(f"recipe {args.recipe} {' '.join(args.set)}: one process, one thread, s per optimiser step")
    print(f"| part | steps | {' | '.join(columns)} | s/step | minutes | share |")
    print("| --- | ---: |" + " ---: |" * (len(columns) + 3))
    for name, steps, t in rows:
        cells = " | ".join(f"{t[c]:.3f}" if c in t else "" for c in columns)
        per_step = sum(t.values())
        print(f"| {name} | {steps} | {cells} | {per_step:.3f} | {steps * per_step / 60:.1f} | "
              f"{steps * per_step / total_run:.0%} |")
    print(f"| all | {sum(s for _, s, _ in rows)} | | | | | | | {total_run / 60:.1f} | 100% |")
    print("Each process of a data-parallel run takes such steps; two processes on two cores add contention "
          "(compare with the `seconds` column of the run's log.csv).")


if __name__ == "__main__":
    main()
