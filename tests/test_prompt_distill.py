"""Stage 0's descriptions as targets for the [SEG] prompts of later stages (``prompt_pretrain.distill_weight``)."""

import csv
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import training.trainer as trainer
from tests.test_model_training import moving_boxes
from tests.test_prompt_pretrain import SMALL_WORLD
from tests.test_trainer import recipe
from training.recipe import TrainConfig
from training.synthetic import WorldConfig, make_clip
from training.synthetic.generate import clip_seed
from training.synthetic.dataset import SyntheticDataset
from training.synthetic.prompt_pretrain import AttributePrompts, PromptPretrainConfig, attach_prompt_targets
from vglamm.errors import ConfigError, DataFormatError, MissingWeightsError
from vglamm.modeling import VideoGLaMM, VideoGLaMMConfig
from vglamm.modeling.losses import prompt_regression_loss


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VideoGLaMM.from_config(VideoGLaMMConfig.tiny())


def test_regression_loss_skips_nan_rows():
    prompts = torch.randn(3, 4, requires_grad=True)
    targets = torch.randn(3, 4)
    targets[1] = float("nan")
    loss = prompt_regression_loss(prompts, targets)
    torch.testing.assert_close(loss, F.mse_loss(prompts[[0, 2]], targets[[0, 2]]))
    loss.backward()
    assert prompts.grad[1].abs().sum() == 0 and prompts.grad[0].abs().sum() > 0
    none = prompt_regression_loss(prompts, torch.full((3, 4), float("nan")))
    assert none.item() == 0.0 and none.requires_grad
    with pytest.raises(ValueError, match="differ"):
        prompt_regression_loss(prompts, torch.zeros(2, 4))


def test_synthetic_samples_name_the_object_of_each_seg():
    config = WorldConfig(num_frames=6, height=64, width=64)
    data = SyntheticDataset(6, seed=2, config=config, p_gcg=0.5, exprs_per_sample=3, answers="short_name")
    tasks = set()
    for i in range(6):
        s = data[i]
        tasks.add(s.meta["task"])
        clip = make_clip(data._records[i].seed, config)
        objects = s.meta["seg_objects"]
        assert len(objects) == len(s.masks) == s.num_seg()
        for obj, masks in zip(objects, s.masks):
            if obj is not None:  # the [SEG]'s mask is exactly this object's
                np.testing.assert_array_equal(masks, clip.object_masks(obj.obj_id)[s.frame_indices])
    assert tasks == {"gcg", "refer"}


def test_only_the_chosen_kinds_of_seg_are_supervised():
    data = SyntheticDataset(8, seed=1, config=WorldConfig(num_frames=4, height=64, width=64), p_gcg=0.4,
                            exprs_per_sample=3, answers="short_name")
    samples = [data[i] for i in range(8)]
    prompts = AttributePrompts(8)
    attach_prompt_targets(prompts, samples, kinds=("gcg", "attribute"))
    seen = set()
    for s in samples:
        for kind, obj, row in zip(s.meta["seg_kinds"], s.meta["seg_objects"], s.meta["prompt_targets"]):
            seen.add(kind)
            assert np.isnan(row).all() == (kind == "motion" or obj is None)
    assert seen == {"gcg", "attribute", "motion"}
    with pytest.raises(ConfigError, match="distill_kinds"):
        PromptPretrainConfig(distill_kinds=("colour",)).validate()


def test_stated_targets_describe_what_the_phrase_says():
    data = SyntheticDataset(8, seed=4, config=WorldConfig(num_frames=4, height=64, width=64), p_gcg=0.3,
                            exprs_per_sample=3, answers="phrase")
    samples = [data[i] for i in range(8)]
    prompts = AttributePrompts(8)
    attach_prompt_targets(prompts, samples, onto="stated")
    seen = {"partial": 0, "full": 0, "gcg": 0}
    for s in samples:
        for kind, obj, said, row in zip(s.meta["seg_kinds"], s.meta["seg_objects"], s.meta["seg_described"],
                                        s.meta["prompt_targets"]):
            keys = tuple(a for a in ("colour", "category", "size") if a in said)
            seen["partial" if len(keys) < 3 else "full"] += 1
            seen["gcg"] += kind == "gcg"
            np.testing.assert_allclose(row, prompts([obj], [keys])[0].detach().numpy(), rtol=1e-6)
    assert all(seen.values()), seen  # e.g. "the red object", "a red car": not every target is a full description
    plain = SyntheticDataset(2, seed=4, config=data.config, p_gcg=0.0, exprs_per_sample=2, answers="plain")[0]
    attach_prompt_targets(prompts, [plain], onto="stated")
    assert np.isnan(plain.meta["prompt_targets"]).all()  # "It is [SEG]." says nothing of the object
    full = [data[i] for i in range(8)]
    attach_prompt_targets(prompts, full, onto="full")
    assert any(not np.allclose(a.meta["prompt_targets"], b.meta["prompt_targets"], equal_nan=True)
               for a, b in zip(samples, full))
    with pytest.raises(ConfigError, match="distill_onto"):
        PromptPretrainConfig(distill_onto="partial").validate()


@pytest.mark.parametrize("onto", ["coloured", "coloured_attributes"])
def test_coloured_targets_are_full_unless_the_phrase_names_the_colour(onto):
    data = SyntheticDataset(12, seed=4, config=WorldConfig(num_frames=4, height=64, width=64), p_gcg=0.3,
                            exprs_per_sample=3, answers="phrase")
    samples = [data[i] for i in range(12)]
    prompts = AttributePrompts(8)
    attach_prompt_targets(prompts, samples, onto=onto)
    seen = {"coloured": 0, "filled in": 0, "stated": 0}
    for s in samples:
        for obj, said, kind, row in zip(s.meta["seg_objects"], s.meta["seg_described"], s.meta["seg_kinds"],
                                        s.meta["prompt_targets"]):
            if said is None:
                assert np.isnan(row).all()
                continue
            stated = tuple(a for a in ("colour", "category", "size") if a in said)
            if "colour" in said:
                keys, case = stated, "coloured"
            elif onto == "coloured" or kind == "attribute":
                keys, case = ("colour", "category", "size"), "filled in"
            else:  # coloured_attributes: motion and caption [SEG]s keep what they state
                keys, case = stated, "stated"
            if not keys:
                assert np.isnan(row).all()
                continue
            seen[case] += 1
            np.testing.assert_allclose(row, prompts([obj], [keys])[0].detach().numpy(), rtol=1e-6)
    # both happen: "the red object" keeps its colour-only target, "the large car" gets the whole description; with
    # coloured_attributes "the car moving left" keeps its category-only target
    assert seen["coloured"] and seen["filled in"], seen
    assert bool(seen["stated"]) == (onto == "coloured_attributes"), seen


def test_targets_are_the_descriptions_and_batch_in_seg_order(model):
    data = SyntheticDataset(3, seed=0, config=WorldConfig(num_frames=4, height=64, width=64), p_gcg=0.0,
                            exprs_per_sample=3, answers="short_name")
    samples = [data[0], moving_boxes(), data[1]]  # the middle one has no descriptions: unsupervised rows
    samples[0].meta["seg_objects"][-1] = None  # e.g. an expression about a group of objects
    prompts = AttributePrompts(model.cfg.pixel_decoder.prompt_dim)
    attach_prompt_targets(prompts, samples)
    assert "prompt_targets" not in samples[1].meta
    first = samples[0].meta["prompt_targets"]
    objects = samples[0].meta["seg_objects"]
    np.testing.assert_allclose(first[:-1], prompts(objects[:-1]).detach().numpy(), rtol=1e-6)
    assert np.isnan(first[-1]).all()

    batch = model.processor(samples)
    targets = batch["prompt_targets"]
    counts = batch["num_seg"].tolist()
    assert targets.shape == (sum(counts), prompts.colour.embedding_dim)
    rows = targets.split(counts)
    np.testing.assert_array_equal(rows[0].numpy(), first)
    assert torch.isnan(rows[1]).all()
    np.testing.assert_array_equal(rows[2].numpy(), samples[2].meta["prompt_targets"])
    assert model.processor([moving_boxes()])["prompt_targets"] is None

    samples[0].meta["prompt_targets"] = first[:, :3]  # wrong width
    with pytest.raises(DataFormatError, match="prompt_targets"):
        model.processor(samples)


def test_forward_reports_the_prompt_loss_apart_and_it_reaches_only_the_prompt_path(model):
    sample = moving_boxes()
    plain = model(model.processor([sample]))
    assert plain.prompt_loss is None
    dim = model.cfg.pixel_decoder.prompt_dim
    sample.meta["prompt_targets"] = np.stack([np.ones(dim, np.float32), np.full(dim, np.nan, np.float32)])
    model.zero_grad(set_to_none=True)
    out = model(model.processor([sample]))
    torch.testing.assert_close(out.loss, plain.loss)  # the paper's loss is unchanged; the trainer adds the term
    assert out.prompt_loss.item() > 0
    out.prompt_loss.backward()
    assert model.seg_adapter.proj[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.pixel_decoder.parameters())
    model.zero_grad(set_to_none=True)


def test_forward_without_masks_leaves_sam2_out(model):
    sample = moving_boxes()
    sample.meta["prompt_targets"] = np.ones((sample.num_seg(), model.cfg.pixel_decoder.prompt_dim), np.float32)
    batch = model.processor([sample])
    full = model(batch)
    model.zero_grad(set_to_none=True)
    out = model(batch, decode_masks=False)
    assert out.mask_logits == [] and out.bce_loss.item() == out.dice_loss.item() == 0.0
    torch.testing.assert_close(out.ce_loss, full.ce_loss)  # the language side is the same pass
    torch.testing.assert_close(out.prompt_loss, full.prompt_loss)
    torch.testing.assert_close(out.loss, model.cfg.ce_weight * out.ce_loss)
    (out.loss + out.prompt_loss).backward()
    assert model.seg_adapter.proj[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.pixel_decoder.parameters())
    model.zero_grad(set_to_none=True)


def stage0_recipe(tmp_path, stage0_extra=None, **extra):
    stage0 = {"steps": 2, "clips_per_step": 1, "frames": 2, "mode": "framewise", "world": SMALL_WORLD,
              "log_every": 1, "distill_weight": 0.5, **(stage0_extra or {})}
    return TrainConfig.from_dict(recipe(tmp_path, steps=2, prompt_pretrain=stage0, log_every=1, **extra))


@pytest.mark.parametrize("rehearse", [0.0, 2.0])
def test_trainer_adds_the_weighted_prompt_and_rehearsal_losses(tmp_path, rehearse):
    cfg = stage0_recipe(tmp_path, {"rehearse_weight": rehearse})
    model = trainer.train(cfg, progress=False)
    with (tmp_path / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    m = model.cfg
    for r in rows:
        v = {k: float(r[k]) for k in ("loss", "ce_loss", "bce_loss", "dice_loss", "prompt_loss")}
        assert v["prompt_loss"] > 0
        paper = m.ce_weight * v["ce_loss"] + m.bce_weight * v["bce_loss"] + m.dice_weight * v["dice_loss"]
        rehearsal = float(r["rehearse_loss"]) if rehearse else 0.0  # stage 0's own loss on one of its clips
        assert (r["rehearse_loss"] != "") == bool(rehearse) and rehearsal >= 0
        assert v["loss"] == pytest.approx(paper + 0.5 * v["prompt_loss"] + rehearse * rehearsal, rel=1e-3, abs=1e-4)


def test_rehearsal_is_stage_zeros_loss_and_reaches_sam2_only(tmp_path):
    from training.synthetic.prompt_pretrain import description_loss, pretrain_pixel_decoder

    cfg = stage0_recipe(tmp_path).prompt_pretrain_config()
    torch.manual_seed(0)
    model = VideoGLaMM.from_config(VideoGLaMMConfig.tiny())
    prompts = AttributePrompts(model.cfg.pixel_decoder.prompt_dim).requires_grad_(False)
    loss, logits, target = description_loss(model.pixel_decoder, prompts, cfg, 7, np.random.default_rng(3))
    again, _, _ = description_loss(model.pixel_decoder, prompts, cfg, 7, np.random.default_rng(3))
    assert loss.item() == again.item() > 0 and logits.shape == target.shape  # one seeded clip, all its objects
    clip = make_clip(clip_seed(0, "train", 7), WorldConfig(**SMALL_WORLD))
    assert target.shape[:2] == (len(clip.scene.objects), cfg.frames)
    loss.backward()
    grads = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {"pixel_decoder"}
    # stage 0 itself is this loss, averaged over its clips: its first step (clip 0, frames drawn from its seed) logs it
    first, _, _ = description_loss(model.pixel_decoder.train(), prompts, cfg, 0, np.random.default_rng(3))
    history = pretrain_pixel_decoder(model.pixel_decoder, dataclasses.replace(cfg, steps=1, seed=3), progress=False,
                                     prompts=prompts)
    assert history[0]["loss"] == pytest.approx(first.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="rehearse_weight"):
        PromptPretrainConfig(rehearse_weight=-1.0).validate()


def test_distilling_needs_stage_zero_descriptions(tmp_path):
    cfg = stage0_recipe(tmp_path)
    model = trainer.build_model(cfg)
    trainer.prompt_pretrain_stage(cfg, model, tmp_path, 0, resuming=False, progress=False)
    # a run folder from before the descriptions were kept beside SAM2's weights
    (tmp_path / trainer.PROMPT_PRETRAIN_FILE).parent.joinpath(trainer.ATTRIBUTE_PROMPTS_FILE).unlink()
    with pytest.raises(MissingWeightsError, match="distill_weight"):
        trainer.train(cfg, progress=False)
    with pytest.raises(ConfigError, match="distill_weight"):
        PromptPretrainConfig(distill_weight=-1.0).validate()


def test_a_language_stage_trains_the_llm_and_leaves_sam2_as_stage_zero_left_it(tmp_path):
    from safetensors.torch import load_file

    cfg = stage0_recipe(tmp_path, {"rehearse_weight": 2.0})  # rehearsal would train SAM2: a language stage skips it
    cfg.stages[0].decode_masks = False
    start = dict(trainer.build_model(cfg).named_parameters())
    model = trainer.train(cfg, progress=False)
    stage0 = load_file(str(tmp_path / trainer.PROMPT_PRETRAIN_FILE))
    for name, p in model.pixel_decoder.state_dict().items():
        torch.testing.assert_close(p, stage0[name], rtol=0, atol=0, msg=name)
    llm = [n for n in start if n.startswith("language_model.")]
    assert sum(not torch.equal(start[n], dict(model.named_parameters())[n]) for n in llm) > len(llm) // 2
    with (tmp_path / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        assert float(r["bce_loss"]) == float(r["dice_loss"]) == 0.0 and r["rehearse_loss"] == ""
        assert float(r["loss"]) == pytest.approx(float(r["ce_loss"]) + 0.5 * float(r["prompt_loss"]), rel=1e-3)


def test_binding_probe_scores_prompts_by_their_nearest_description():
    """benchmarks/probe_binding.py: a [SEG] prompt equal to its own target is right, one equal to another object's
    description is wrong, and chance is 1 / the objects matching what the expression states; likewise the readout's
    attention on its own object's tokens or on another's."""
    import types

    from tests.test_prompt_pretrain import load_eval_script
    from training.readout_supervision import visual_token_cover
    from vglamm.modeling import VideoGLaMMConfig

    binding = load_eval_script("probe_binding").binding

    torch.manual_seed(0)
    descriptions = AttributePrompts(8).requires_grad_(False)

    class Oracle:  # stands in for a model whose prompts are exactly the distillation targets (or a wrong object's)
        def __init__(self, wrong: bool, readout: bool = True):
            self.wrong = wrong
            self.cfg = VideoGLaMMConfig.preset("tiny")  # 4 LLM frames
            self.cfg.adapters.seg_attention_heads = 4 if readout else 0

        def processor(self, samples):
            return {"samples": samples}

        def __call__(self, batch, decode_masks):
            assert decode_masks is False  # SAM2 stays out
            samples = batch["samples"]
            attach_prompt_targets(descriptions, samples, onto="stated")
            rows, looks = [], []
            for s in samples:
                targets = torch.as_tensor(s.meta["prompt_targets"])
                ids = [o.obj_id for o in s.meta["scene_objects"]]
                cover = visual_token_cover(s.meta["object_masks"], self.cfg)
                attention = []
                for j, (obj, said) in enumerate(zip(s.meta["seg_objects"], s.meta["seg_described"])):
                    k = ids.index(obj.obj_id) if obj is not None else 0
                    if self.wrong and obj is not None and said:  # some other object of the clip, same keys
                        other = next(o for o in s.meta["scene_objects"] if o.obj_id != obj.obj_id)
                        targets[j] = descriptions([other], [tuple(said)])[0]
                        k = ids.index(other.obj_id)
                    attention.append(cover[k] / cover[k].sum())
                rows.append(targets)
                looks += attention
            seg_attention = torch.stack(looks) if "readout_targets" in batch else None
            return types.SimpleNamespace(seg_prompts=torch.cat(rows), seg_attention=seg_attention)

    right = binding(Oracle(wrong=False), descriptions, num_videos=6, batch=4)
    assert {"attribute", "motion"} <= set(right) and all(n > 0 for _, _, n, _ in right.values())
    assert all(acc == 1.0 for acc, _, _, _ in right.values())
    assert right["attribute"][1] == 1.0  # an attribute expression states what singles its object out
    assert all(0 < chance <= 1 for _, chance, _, _ in right.values())
    assert all(looks > 0.9 for _, _, _, looks in right.values())  # ties between overlapping objects aside
    wrong = binding(Oracle(wrong=True), descriptions, num_videos=6, batch=4)
    assert all(acc < 1.0 for acc, _, _, _ in wrong.values())
    assert all(looks < 0.5 for _, _, _, looks in wrong.values())
    plain = binding(Oracle(wrong=False, readout=False), descriptions, num_videos=6, batch=4)
    assert all(looks is None for _, _, _, looks in plain.values())
