"""Data parallelism with the torch backend: N processes (CPU cores or GPUs) launched by torchrun, each drawing its
own micro-batches and stage-0 clips, gradients averaged so every replica applies the same update."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from test_trainer import REPO, recipe
from training.trainer import _check_replicas_agree, average_gradients


def _average_worker(rank: int, init_file: str, results: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
    a.grad = torch.full((3,), float(rank + 1))
    b.grad = None if rank == 0 else torch.full((2, 2), 4.0)  # no gradient on rank 0 counts as zero there
    average_gradients([a, b])
    same = torch.nn.Parameter(torch.ones(2))
    _check_replicas_agree([same])  # equal weights pass
    try:
        _check_replicas_agree([torch.nn.Parameter(torch.full((2,), float(rank)))])
        diverged = None
    except RuntimeError as e:
        diverged = str(e)
    with open(f"{results}.{rank}", "w") as f:
        json.dump({"a": a.grad.tolist(), "b": b.grad.tolist(), "diverged": diverged}, f)
    torch.distributed.destroy_process_group()


def test_gradients_are_averaged_over_ranks_and_diverged_replicas_are_caught(tmp_path):
    results = str(tmp_path / "result")
    mp.spawn(_average_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads(open(f"{results}.{rank}").read())
        assert got["a"] == [1.5, 1.5, 1.5]
        assert got["b"] == [[2.0, 2.0], [2.0, 2.0]]
        assert got["diverged"] is not None and "diverged" in got["diverged"]


def test_two_processes_train_stage_zero_and_the_stage_data_parallel(tmp_path):
    """Each rank draws different clips, so a step that skipped the averaging would leave the replicas apart, and
    the trainer's closing check (the ranks' weights agree) would fail the run."""
    world = {"num_frames": 4, "height": 64, "width": 64}
    d = recipe(tmp_path / "run", steps=3, export_dir=str(tmp_path / "run" / "export"),
               prompt_pretrain={"steps": 2, "clips_per_step": 1, "frames": 2, "mode": "framewise", "world": world,
                                "log_every": 1, "distill_weight": 1.0, "rehearse_weight": 0.5,
                                "token_probe_weight": 1.0})
    d["optim"]["grad_accum"] = 1
    d["num_workers"] = 1  # each rank's samples drawn ahead by a data-loader worker of its own
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(d))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "vglamm.cli", "train", str(path)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1  # rank 0 reports, once
    run = tmp_path / "run"
    assert [r["step"] for r in json.loads((run / "prompt_pretrain" / "history.json").read_text())] == [1, 2]
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["rehearse_loss"]) > 0 and float(r["prompt_loss"]) > 0 for r in rows)
    from vglamm.modeling import VideoGLaMM

    model = VideoGLaMM.from_pretrained(run / "export")
    assert sum(p.numel() for p in model.parameters()) > 0


def _drawn_clips(world: int, clips_per_step: int, monkeypatch) -> list[list[int]]:
    """The stage-0 clip indices each rank draws over two steps (SAM2's loss replaced by a stub that records them)."""
    from training.synthetic import prompt_pretrain as pp
    from vglamm.modeling.pixel_decoder import PixelDecoderConfig, SAM2PixelDecoder

    decoder = SAM2PixelDecoder(PixelDecoderConfig.nano(64))
    cfg = pp.PromptPretrainConfig(steps=2, clips_per_step=clips_per_step, frames=2,
                                  world={"num_frames": 4, "height": 64, "width": 64})
    drawn = []

    def record(decoder, prompts, cfg, index, rng):
        drawn[-1].append(index)
        zero = sum(p.sum() for p in decoder.parameters()) * 0
        return zero, torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)

    monkeypatch.setattr(pp, "description_loss", record)
    monkeypatch.setattr(pp, "average_gradients", lambda params: None)  # no process group here
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: world)
    for rank in range(world):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        drawn.append([])
        pp.pretrain_pixel_decoder(decoder, cfg, progress=False, data_parallel=True)
    return drawn


def test_stage_zero_ranks_split_the_clips_one_process_would_draw(monkeypatch):
    one = _drawn_clips(1, 2, monkeypatch)
    two = _drawn_clips(2, 1, monkeypatch)
    assert one == [[0, 1, 2, 3]]
    assert two == [[0, 2], [1, 3]]  # step 0: clips 0 and 1, step 1: clips 2 and 3, one per rank


def test_the_token_probe_starts_alike_whatever_stage_zero_drew():
    """Stage 0's dropout draws depend on each rank's clips; heads seeded from the global generator would start
    different on each rank (the replicas check caught this in the default model's two-process run)."""
    from training.recipe import TrainConfig
    from training.trainer import build_model, new_token_probe

    cfg = TrainConfig.from_dict(recipe("unused"))
    model = build_model(cfg)
    torch.manual_seed(1)
    first, pool = new_token_probe(cfg, model, torch.device("cpu"))
    torch.rand(1000)  # another rank's stage 0 drew a different number of random values
    second, _ = new_token_probe(cfg, model, torch.device("cpu"))
    assert pool == model.cfg.adapters.video_pool
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    after = torch.rand(1)
    torch.manual_seed(1), torch.rand(1000)
    assert torch.equal(after, torch.rand(1))  # building the probe leaves the global generator where it was
