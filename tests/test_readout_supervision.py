"""The L->V readout told where each [SEG]'s object is (the recipe's ``readout_weight``)."""

import csv

import numpy as np
import pytest
import torch

import training.trainer as trainer
from tests.test_prompt_distill import stage0_recipe
from tests.test_trainer import recipe
from training.recipe import TrainConfig
from training.readout_supervision import readout_targets, token_cover
from training.synthetic.dataset import SyntheticDataset
from training.synthetic.world import WorldConfig
from vglamm.errors import ConfigError
from vglamm.modeling import VideoGLaMMConfig
from vglamm.modeling.adapters import SegAdapter
from vglamm.modeling.losses import readout_attention_loss
from vglamm.sample import GroundedSample


def test_token_cover_follows_each_stream_s_view_of_a_wide_frame():
    masks = torch.zeros(1, 1, 32, 64, dtype=torch.bool)
    masks[0, 0, :16, :16] = True  # the top-left quarter of the left half: outside CLIP's centre square
    masks[0, 0, 16:, 32:40] = True  # inside it: half of the square's bottom-right cell
    crop = token_cover(masks, pool=2, crop_square=True)  # centre 32 x 32: columns 16..47
    assert crop.tolist() == [[0.0, 0.0, 0.0, 0.5]]
    stretch = token_cover(masks, pool=2, crop_square=False)  # cells of 16 x 32
    assert stretch[0].tolist() == pytest.approx([0.5, 0.0, 0.0, 0.25])


def test_targets_are_each_seg_s_cover_normalised_with_unseen_objects_left_out():
    cfg = VideoGLaMMConfig.preset("tiny")
    cfg.num_frames, cfg.adapters.image_pool, cfg.adapters.video_pool = 2, 2, 2
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    masks = np.zeros((2, 4, 32, 32), bool)
    masks[0, 0, :16, :16] = True  # the LLM sees frames 0 and 3 (uniform): frame 0, top-left cell
    masks[0, 3, 16:, 16:] = True  # frame 3, bottom-right cell
    masks[1, 1] = True  # only on a frame the LLM does not see
    sample = GroundedSample(frames, [], masks)
    got = readout_targets([sample, sample], [2, 1], cfg)
    assert got.shape == (3, 2 * (4 + 4))  # [SEG]s of both samples, CLIP then InternVideo2 tokens
    one = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 1.0]) / 4
    assert torch.allclose(got[0], torch.cat([one, one]))
    assert torch.isnan(got[1]).all()
    assert torch.allclose(got[2], got[0])
    cfg.use_video_encoder = False
    assert readout_targets([sample], [1], cfg).shape == (1, 8)
    assert readout_targets([sample], [0], cfg) is None


def test_loss_is_zero_on_target_and_skips_unsupervised_rows():
    target = torch.tensor([[0.5, 0.5, 0.0, 0.0], [float("nan")] * 4])
    logits = torch.zeros(2, 4, requires_grad=True)
    loss = readout_attention_loss(logits.softmax(-1), target)
    assert loss.item() == pytest.approx(float(np.log(2)))  # KL(0.5, 0.5 || 0.25 x 4)
    loss.backward()
    assert logits.grad[0, :2].sum() < 0 and logits.grad[1].abs().sum() == 0
    exact = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    assert readout_attention_loss(exact, target).item() == pytest.approx(0.0, abs=1e-6)
    assert readout_attention_loss(exact, target[1:].expand(2, 4)).item() == 0.0
    with pytest.raises(ValueError, match="differ"):
        readout_attention_loss(exact, target[:, :3])


def test_adapter_returns_the_attention_its_prompts_were_read_with():
    torch.manual_seed(0)
    adapter = SegAdapter(16, 8, heads=2, num_visual=6)
    torch.nn.init.normal_(adapter.readout.weight)  # starts at zero: make the read count
    hidden, visual = torch.randn(3, 16), torch.randn(2, 6, 16)
    rows = torch.tensor([0, 1, 1])
    prompts, attention = adapter(hidden, visual, rows, with_attention=True)
    assert torch.allclose(prompts, adapter(hidden, visual, rows), atol=1e-5)
    assert attention.shape == (3, 6) and torch.allclose(attention.sum(-1), torch.ones(3))
    assert SegAdapter(16, 8)(hidden, with_attention=True)[1] is None  # the paper's MLP reads nothing


def test_the_readout_learns_to_look_where_it_is_told():
    torch.manual_seed(0)
    adapter = SegAdapter(16, 8, heads=2, num_visual=6)
    hidden, visual = torch.randn(4, 16), torch.randn(1, 6, 16)
    target = torch.eye(6)[[1, 3, 4, 5]]  # each state has its own token
    opt = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        _, attention = adapter(hidden, visual, with_attention=True)
        loss = readout_attention_loss(attention, target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, attention = adapter(hidden, visual, with_attention=True)
    assert loss.item() < 0.2 * first
    assert (attention.argmax(-1) == torch.tensor([1, 3, 4, 5])).all()


def test_trainer_adds_the_weighted_readout_loss(tmp_path):
    heads = {"trainable": "all", "adapters.seg_attention_heads": 2}
    cfg = stage0_recipe(tmp_path, readout_weight=2.0, model_overrides=heads)
    model = trainer.train(cfg, progress=False)
    with (tmp_path / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    m = model.cfg
    for r in rows:
        v = {k: float(r[k]) for k in ("loss", "ce_loss", "bce_loss", "dice_loss", "prompt_loss", "readout_loss")}
        assert v["readout_loss"] > 0
        paper = m.ce_weight * v["ce_loss"] + m.bce_weight * v["bce_loss"] + m.dice_weight * v["dice_loss"]
        assert v["loss"] == pytest.approx(paper + 0.5 * v["prompt_loss"] + 2.0 * v["readout_loss"], rel=1e-3,
                                          abs=1e-4)
    # a fine-tune without stage 0 (the default model's polish) is told where to look too: only the masks are needed
    model = trainer.train(TrainConfig.from_dict(recipe(tmp_path / "fine", steps=2, log_every=1, readout_weight=0.5,
                                                       model_overrides=heads)), progress=False)
    with (tmp_path / "fine" / "log.csv").open() as f:
        for r in csv.DictReader(f):
            v = {k: float(r[k]) for k in ("loss", "ce_loss", "bce_loss", "dice_loss", "readout_loss")}
            paper = m.ce_weight * v["ce_loss"] + m.bce_weight * v["bce_loss"] + m.dice_weight * v["dice_loss"]
            assert v["readout_loss"] > 0 and r["prompt_loss"] == ""
            assert v["loss"] == pytest.approx(paper + 0.5 * v["readout_loss"], rel=1e-3, abs=1e-4)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match="readout_weight"):
            stage0_recipe(tmp_path, readout_weight=bad)
    with pytest.raises(ConfigError, match="seg_attention_heads"):  # no readout to supervise: said, not ignored
        trainer.train(stage0_recipe(tmp_path / "plain", readout_weight=1.0), progress=False)
    assert not (tmp_path / "plain" / "prompt_pretrain").exists()  # before stage 0 spent its time


def test_synthetic_samples_give_one_target_row_per_seg():
    ds = SyntheticDataset(3, config=WorldConfig(num_frames=8, height=64, width=96), p_gcg=0.5)
    cfg = VideoGLaMMConfig.preset("tiny")
    samples = [ds[i] for i in range(3)]
    num_seg = [len(s.masks) for s in samples]
    got = readout_targets(samples, num_seg, cfg)
    assert got.shape == (sum(num_seg), cfg.visual_tokens_per_video)
    seen = ~torch.isnan(got).any(-1)
    assert seen.any() and torch.allclose(got[seen].sum(-1), torch.ones(int(seen.sum())))
