"""Dense targets on the visual tokens (``prompt_pretrain.token_probe_weight``): what each cell shows, how it moves."""

import csv

import numpy as np
import pytest
import torch

import training.trainer as trainer
from tests.test_prompt_distill import stage0_recipe
from tests.test_prompt_pretrain import SMALL_WORLD
from tests.test_trainer import recipe
from training.recipe import TrainConfig
from training.synthetic.dataset import SyntheticDataset
from training.synthetic.token_probe import HEADS, MOTIONS, TokenProbe, token_targets
from training.synthetic.world import CATEGORIES, PALETTE, SceneObject, WorldConfig
from vglamm.errors import ConfigError, MissingWeightsError
from vglamm.sample import GroundedSample


def _object(obj_id, colour, category, size, velocity=(0.0, 0.0), stop_frame=None):
    return SceneObject(obj_id=obj_id, category=category, colour=colour, size=size, width=10.0, height=10.0,
                       start=(0.0, 0.0), velocity=velocity, stop_frame=stop_frame, depth=obj_id, facing=1)


def test_each_cell_gets_the_object_covering_most_of_it_and_its_motion_at_that_frame():
    car = _object(1, "red", "car", "large", velocity=(2.0, 0.0), stop_frame=2)  # drives right, stops at frame 2
    ball = _object(2, "blue", "ball", "small")  # never moves
    masks = np.zeros((2, 2, 32, 32), bool)  # frames 1 and 3 of the clip, a 2x2 grid of 16 px cells
    masks[0, :, :16, :16] = True  # the car fills the top-left cell
    masks[1, :, :16, :6] = True  # the ball covers 6/16 of it too: the car still covers most
    masks[1, :, 16:, 16:24] = True  # half of the bottom-right cell: enough
    masks[1, 1, 16:, 16:] = False
    masks[1, 1, 16:18, 16:] = True  # at frame 3 only 1/8 of it: below min_cover, no object there
    got = token_targets([car, ball], masks, frames=[1, 3], pool=2)
    assert got.shape == (2, 4, len(HEADS))
    red_car = [1 + list(PALETTE).index("red"), 1 + CATEGORIES.index("car"), 2]
    blue_ball = [1 + list(PALETTE).index("blue"), 1 + CATEGORIES.index("ball"), 1, 1 + MOTIONS.index("still")]
    assert got[0, 0].tolist() == red_car + [1 + MOTIONS.index("right")]  # frame 1: still driving
    assert got[1, 0].tolist() == red_car + [1 + MOTIONS.index("still")]  # frame 3: stopped
    assert got[0, 3].tolist() == blue_ball
    assert got[1, 3].tolist() == [0, 0, 0, 0]
    assert (got[:, 1:3] == 0).all()  # empty cells


def test_synthetic_samples_carry_every_object_and_their_masks_at_the_sampled_frames():
    ds = SyntheticDataset(4, config=WorldConfig(num_frames=8, height=64, width=96), p_gcg=0.5)
    for i in range(4):
        s = ds[i]
        objects, masks = s.meta["scene_objects"], s.meta["object_masks"]
        assert masks.shape == (len(objects), *s.frames.shape[:3])
        assert not (s.masks.any(0) & ~masks.any(0)).any()  # every [SEG]'s mask is made of these objects'
        targets = token_targets(objects, masks, s.frame_indices, pool=4)
        moving = {1 + MOTIONS.index(o.direction) for o in objects if o.moves}
        assert set(targets[..., 3].ravel()) - {0, 1} <= moving  # only the directions the clip's objects move in


def test_probe_loss_reads_only_synthetic_samples_and_checks_the_grid():
    ds = SyntheticDataset(2, config=WorldConfig(num_frames=4, height=128, width=128))
    samples = [ds[0], GroundedSample(ds[1].frames, ds[1].conversation, ds[1].masks)]  # the second has no scene
    torch.manual_seed(0)
    probe = TokenProbe(8)
    tokens = torch.randn(2, 4 * 16, 8, requires_grad=True)
    loss = probe.loss(tokens, samples, pool=4)
    assert loss.item() > 0
    loss.backward()
    assert tokens.grad[0].abs().sum() > 0 and tokens.grad[1].abs().sum() == 0
    assert probe.loss(tokens, samples[1:], pool=4) is None
    empty = GroundedSample(ds[0].frames, ds[0].conversation, ds[0].masks, ds[0].frame_indices,
                           meta={"scene_objects": (), "object_masks": np.zeros((0, 4, 128, 128), bool)})
    assert probe.loss(tokens[:1], [empty], pool=4) is None  # no cell shows an object: nothing to learn
    with pytest.raises(ValueError, match="target cells"):
        probe.loss(tokens, samples, pool=2)


def test_trainer_adds_the_probe_loss_and_keeps_its_heads_in_checkpoints(tmp_path):
    d = recipe(tmp_path, steps=2, log_every=1, prompt_pretrain={
        "steps": 2, "clips_per_step": 1, "frames": 2, "mode": "framewise", "world": SMALL_WORLD, "log_every": 1,
        "distill_weight": 0.5, "token_probe_weight": 2.0})
    d["stages"][0]["datasets"][0]["options"]["world"] = {"num_frames": 4, "height": 128, "width": 128}
    d["model_overrides"]["adapters.video_pool"] = 4  # 32-px cells: objects cover them
    cfg = TrainConfig.from_dict(d)
    model = trainer.train(cfg, progress=False)
    with (tmp_path / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    m = model.cfg
    for r in rows:
        v = {k: float(r[k]) for k in ("loss", "ce_loss", "bce_loss", "dice_loss", "prompt_loss", "probe_loss")}
        assert v["probe_loss"] > 0
        paper = m.ce_weight * v["ce_loss"] + m.bce_weight * v["bce_loss"] + m.dice_weight * v["dice_loss"]
        assert v["loss"] == pytest.approx(paper + 0.5 * v["prompt_loss"] + 2.0 * v["probe_loss"], rel=1e-3, abs=1e-4)
    state = torch.load(tmp_path / "checkpoint-2" / "state.pt", weights_only=True)
    torch.manual_seed(0)
    assert set(state["probe"]) == set(TokenProbe(4).state_dict())
    assert state["probe"]["heads.motion.weight"].shape[1] == m.language_model.hidden_size
    # a checkpoint saved without the heads cannot resume a recipe that trains them
    state["probe"] = None
    torch.save(state, tmp_path / "checkpoint-2" / "state.pt")
    with pytest.raises(MissingWeightsError, match="token-probe"):
        trainer.train(cfg, resume=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="token_probe_weight"):
        stage0_recipe(tmp_path, {"token_probe_weight": -1.0})
