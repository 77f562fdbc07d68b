"""The trainer on the tiny model and the on-the-fly synthetic world: runs, resume after a kill, export."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from training.recipe import TrainConfig, load_recipe
from training.trainer import build_model, export, latest_checkpoint, lr_factor, seed_everything, train
from vglamm.errors import ConfigError, MissingWeightsError

REPO = Path(__file__).resolve().parents[1]


def recipe(out_dir, steps=3, **extra) -> dict:
    d = {
        "model": "tiny",
        "model_overrides": {"trainable": "all"},
        "stages": [{"name": "synthetic", "steps": steps, "datasets": [{
            "loader": "synthetic", "root": "unused",
            "options": {"num_videos": 8, "num_frames": 4, "world": {"num_frames": 4, "height": 64, "width": 64}}}]}],
        "optim": {"lr": 1e-3, "warmup_steps": 1, "batch_size": 1, "grad_accum": 2},
        "out_dir": str(out_dir), "save_every": 2, "seed": 3,
    }
    d.update(extra)
    return d


def initial_model(d: dict):
    """The model a run starts from (the trainer seeds initialisation with the recipe's seed)."""
    seed_everything(d["seed"])
    return build_model(TrainConfig.from_dict(d))


def trainable_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Three uninterrupted steps: the reference the other tests compare against."""
    out = tmp_path_factory.mktemp("full")
    torch.manual_seed(123)  # the trainer must not depend on the caller's RNG state
    model = train(TrainConfig.from_dict(recipe(out)), progress=False)
    return out, model


def test_run_writes_log_checkpoints_and_learns(full_run):
    out, model = full_run
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for r in rows:
        assert all(float(r[k]) >= 0 for k in ("loss", "ce_loss", "bce_loss", "dice_loss"))
    assert latest_checkpoint(out).name == "checkpoint-3"
    assert (out / "checkpoint-2" / "trainer_state.json").exists()
    start = dict(initial_model(recipe(out)).named_parameters())
    moved = [n for n, p in trainable_state(model).items() if not torch.equal(p, start[n])]
    assert len(moved) > len(start) // 2, f"only {len(moved)} of {len(start)} parameters changed in three steps"


def test_frozen_parameters_stay_frozen_and_untouched(tmp_path):
    d = recipe(tmp_path, steps=1, model_overrides={"trainable": ["seg_adapter", "mask_decoder"]})
    model = train(TrainConfig.from_dict(d), progress=False)
    ref_params = dict(initial_model(d).named_parameters())
    for name, p in model.named_parameters():
        if "seg_adapter" in name or "sam_mask_decoder" in name:
            assert p.requires_grad
        else:
            assert not p.requires_grad and p.grad is None
            assert torch.equal(p, ref_params[name]), name


def test_resume_after_kill_reaches_the_same_weights(full_run, tmp_path):
    """SIGKILL the run right after its step-2 checkpoint, resume, and compare with the uninterrupted run."""
    _, reference = full_run
    cfg = recipe(tmp_path)
    script = textwrap.dedent("""
        import json, os, signal, sys
        import training.trainer as T
        from training.recipe import TrainConfig

        save = T.save_checkpoint
        def save_then_die(out_dir, step, *args, **kwargs):
            path = save(out_dir, step, *args, **kwargs)
            if step == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return path
        T.save_checkpoint = save_then_die
        T.train(TrainConfig.from_dict(json.loads(sys.argv[1])), progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cfg)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"
    assert not (tmp_path / "checkpoint-3").exists()

    resumed = train(TrainConfig.from_dict(cfg), resume=tmp_path, progress=False)
    want, got = trainable_state(reference), trainable_state(resumed)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
    steps = [int(r["step"]) for r in csv.DictReader((tmp_path / "log.csv").open())]
    assert steps == [1, 2, 3]  # the log keeps the rows up to the checkpoint and continues from there


def test_data_loader_workers_draw_what_the_training_process_would(full_run, tmp_path):
    """Samples drawn ahead by worker processes train the same weights as samples drawn in the loop, from step 0 and
    from a checkpoint (the workers start at the resumed step's micro-batch)."""
    full, reference = full_run
    want = trainable_state(reference)
    ahead = train(TrainConfig.from_dict(recipe(tmp_path / "ahead", num_workers=2)), progress=False)
    resumed = train(TrainConfig.from_dict(recipe(tmp_path / "resumed", num_workers=1)), resume=full / "checkpoint-2",
                    progress=False)
    for run in (ahead, resumed):
        got = trainable_state(run)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
    loss = {int(r["step"]): r["loss"] for r in csv.DictReader((full / "log.csv").open())}
    assert {int(r["step"]): r["loss"] for r in csv.DictReader((tmp_path / "ahead" / "log.csv").open())} == loss


def test_export_merges_lora_and_reloads_identically(full_run, tmp_path):
    from vglamm.modeling import VideoGLaMM

    _, model = full_run
    assert model.language_model.lora_applied
    exported = export(model, tmp_path / "export")
    assert model.language_model.lora_applied  # exporting does not change the caller's model
    loaded = VideoGLaMM.from_pretrained(exported, device="cpu")
    assert not loaded.language_model.lora_applied
    assert not any("lora_" in n for n, _ in loaded.named_parameters())

    from training.data import build_dataset

    ds = build_dataset("synthetic", "unused", num_videos=2, num_frames=4,
                       world={"num_frames": 4, "height": 64, "width": 64})
    batch = model.processor([ds[0], ds[1]])
    model.eval()
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-4, atol=1e-4)


def test_deepspeed_backend_runs_through_the_cli(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(tmp_path / "run", steps=3)))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "vglamm.cli", "train", str(path), "--set", "backend=deepspeed",
                           "--set", "zero_stage=2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-3"


def test_recipe_overrides_and_errors(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(tmp_path)))
    cfg = load_recipe(path, ["optim.lr=5e-5", "seed=9"])
    assert cfg.optim.lr == 5e-5 and cfg.seed == 9 and cfg.total_steps == 3
    # model settings: dotted keys after model_overrides, as the recipe writes them; nested mappings work too
    cfg = load_recipe(path, ["model_overrides.adapters.video_pool=1",
                             "model_overrides.language_model={use_lora: false}"])
    assert cfg.model_overrides["adapters.video_pool"] == 1 and cfg.model_overrides["trainable"] == "all"
    model = build_model(cfg)
    assert model.cfg.adapters.video_pool == 1 and not model.cfg.language_model.use_lora
    assert model.cfg.language_model.llm_config  # the rest of a nested section is left as it was
    with pytest.raises(ConfigError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({**recipe(tmp_path), "lerning_rate": 1})
    with pytest.raises(ConfigError, match="lr must be a float"):
        TrainConfig.from_dict({**recipe(tmp_path), "optim": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="no stages"):
        TrainConfig.from_dict({**recipe(tmp_path), "stages": []})
    bad = recipe(tmp_path)
    bad["stages"][0]["decode_mask"] = False  # a misspelt stage key is an error, not a silent default
    with pytest.raises(ConfigError, match="unknown StageSpec keys"):
        TrainConfig.from_dict(bad)
    bad["stages"][0] = {"name": "s", "decode_masks": "no", "datasets": bad["stages"][0]["datasets"], "steps": 1}
    with pytest.raises(ConfigError, match="decode_masks must be true or false"):
        TrainConfig.from_dict(bad)
    for frames in (0, "4", True):
        bad["stages"][0] = {"name": "s", "mask_frames": frames, "datasets": bad["stages"][0]["datasets"], "steps": 1}
        with pytest.raises(ConfigError, match="mask_frames must be a whole number"):
            TrainConfig.from_dict(bad)
    for workers in (-1, True):
        with pytest.raises(ConfigError, match="num_workers must be a whole number"):
            TrainConfig.from_dict({**recipe(tmp_path), "num_workers": workers})
    with pytest.raises(ConfigError, match="num_workers must be .*got 1.5"):  # not truncated to 1
        TrainConfig.from_dict({**recipe(tmp_path), "num_workers": 1.5})
    assert TrainConfig.from_dict({**recipe(tmp_path), "save_every": 2.0}).save_every == 2  # YAML's 2.0 is still 2
    with pytest.raises(ConfigError, match="has no `steps`"):
        TrainConfig.from_dict({**recipe(tmp_path), "stages": [{"name": "s", "datasets": []}]})
    with pytest.raises(ConfigError, match="model override"):
        train(TrainConfig.from_dict(recipe(tmp_path, model_overrides={"no_such.setting": 1})), progress=False)
    with pytest.raises(ConfigError, match="unknown data loader"):
        bad = recipe(tmp_path)
        bad["stages"][0]["datasets"][0]["loader"] = "nope"
        train(TrainConfig.from_dict(bad), progress=False)
    with pytest.raises(MissingWeightsError, match="no complete checkpoint"):
        latest_checkpoint(tmp_path / "empty")


def test_mask_frames_subsample_sam2_frames_and_their_masks_alike():
    import numpy as np

    from training.synthetic import SyntheticDataset
    from training.trainer import subsample_mask_frames

    model = initial_model(recipe("unused"))
    samples = [SyntheticDataset(4, exprs_per_sample=2)[i] for i in (0, 1)]
    whole = model.processor(samples)
    batch = subsample_mask_frames(model.processor(samples), 3, np.random.default_rng(0))
    assert [len(p) for p in batch["sam_pixels"]] == [3, 3]
    for cut, full, cut_masks, full_masks in zip(batch["sam_pixels"], whole["sam_pixels"], batch["target_masks"],
                                                whole["target_masks"]):
        # each kept frame is one of the clip's, in order, and its masks are that frame's masks
        kept = [next(t for t in range(len(full)) if torch.equal(full[t], frame)) for frame in cut]
        assert kept == sorted(set(kept))
        assert torch.equal(cut_masks, full_masks[:, kept])
    for key in ("clip_pixels", "video_pixels", "input_ids", "labels"):  # the LLM still sees every frame
        assert torch.equal(batch[key], whole[key]), key
    short = subsample_mask_frames(model.processor(samples), 99, np.random.default_rng(0))
    assert all(torch.equal(a, b) for a, b in zip(short["sam_pixels"], whole["sam_pixels"]))


def test_a_stage_with_mask_frames_decodes_that_many_frames(tmp_path, monkeypatch):
    from vglamm.modeling import VideoGLaMM

    seen = []
    forward = VideoGLaMM.forward

    def spy(self, batch, **kw):
        seen.append(([len(p) for p in batch["sam_pixels"]], [m.shape[1] for m in batch["target_masks"]]))
        return forward(self, batch, **kw)

    monkeypatch.setattr(VideoGLaMM, "forward", spy)
    d = recipe(tmp_path, steps=2)
    d["stages"][0]["mask_frames"] = 2
    train(TrainConfig.from_dict(d), progress=False)
    assert seen and all(frames == masks == [2] for frames, masks in seen)


@pytest.mark.parametrize("path", sorted((REPO / "training" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load_and_name_real_loaders(path):
    from training.data.registry import LOADERS

    cfg = load_recipe(path, ["stages.0.datasets.0.root=elsewhere"])
    assert cfg.stages[0].datasets[0].root == "elsewhere"
    for stage in cfg.stages:
        for spec in stage.datasets:
            assert spec.loader in LOADERS, spec.loader
    with pytest.raises(ConfigError, match="names nothing"):
        load_recipe(path, ["stages.9.steps=1"])


def test_schedule_warms_up_then_decays_linearly():
    cfg = TrainConfig.from_dict(recipe("unused", steps=10, optim={"warmup_steps": 2, "min_lr_ratio": 0.1}))
    factors = [lr_factor(s, cfg) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0 and abs(factors[-1] - (1 - 0.9 * 7 / 8)) < 1e-9
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "training" / "configs").glob("*.yaml")))
def test_every_shipped_recipe_loads_and_builds_a_valid_model_config(name):
    """A typo in a recipe is caught here, not an hour into a run."""
    from training.recipe import load_recipe
    from training.trainer import apply_overrides
    from vglamm.modeling import VideoGLaMMConfig

    cfg = load_recipe(REPO / "training" / "configs" / name)
    assert cfg.stages and all(s.steps > 0 for s in cfg.stages)
    if cfg.model in ("tiny", "paper"):  # the others fine-tune a saved model; their overrides are checked on it
        apply_overrides(VideoGLaMMConfig.preset(cfg.model), cfg.model_overrides).validate()
