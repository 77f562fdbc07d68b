"""Stage 0: SAM2 pre-trained on attribute prompts of the synthetic world, standalone and inside the trainer."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import training.trainer as trainer
from tests.test_trainer import recipe
from training.recipe import TrainConfig
from training.synthetic import WorldConfig, make_clip
from training.synthetic.language import matching
from training.synthetic.prompt_pretrain import (AttributePrompts, PromptPretrainConfig, pretrain_pixel_decoder,
                                                unique_descriptions)
from training.synthetic.world import SceneObject
from vglamm.errors import ConfigError, MissingWeightsError
from vglamm.modeling.pixel_decoder import PixelDecoderConfig, SAM2PixelDecoder

SMALL_WORLD = {"num_frames": 4, "height": 64, "width": 64}


def small(**kw) -> PromptPretrainConfig:
    base = dict(steps=3, clips_per_step=1, frames=2, mode="framewise", world=SMALL_WORLD, log_every=1)
    return PromptPretrainConfig(**{**base, **kw})


def decoder() -> SAM2PixelDecoder:
    torch.manual_seed(0)
    return SAM2PixelDecoder(PixelDecoderConfig.nano(image_size=64))


def test_prompts_are_the_sum_of_attribute_embeddings():
    prompts = AttributePrompts(8)
    obj = dict(obj_id=1, width=10.0, height=5.0, start=(0.0, 0.0), velocity=(0.0, 0.0), stop_frame=None, depth=0, facing=1)
    red_car = SceneObject(category="car", colour="red", size="large", **obj)
    red_ball = SceneObject(category="ball", colour="red", size="large", **obj)
    p = prompts([red_car, red_ball])
    assert p.shape == (2, 8)
    # same colour and size, different category: the difference is exactly the category embeddings'
    diff = prompts.category.weight[prompts.categories.index("car")] - prompts.category.weight[prompts.categories.index("ball")]
    torch.testing.assert_close(p[0] - p[1], diff)


def test_partial_descriptions_name_one_object_and_sum_only_their_attributes():
    seen = set()
    for seed in range(20):
        scene = make_clip(seed, WorldConfig(num_frames=4, height=64, width=64)).scene
        for o in scene.objects:
            options = unique_descriptions(scene, o)
            assert ("colour", "category", "size") in options  # identities are distinct by construction
            for keys in options:
                assert matching(scene, {k: getattr(o, k) for k in keys}) == [o.obj_id]
                seen.add(keys)
    assert ("colour",) in seen and ("category",) in seen and len(seen) >= 5
    prompts = AttributePrompts(8)
    obj = SceneObject(obj_id=1, category="box", colour="red", size="small", width=1.0, height=1.0, start=(0.0, 0.0),
                      velocity=(0.0, 0.0), stop_frame=None, depth=0, facing=1)
    torch.testing.assert_close(prompts([obj], [("colour",)])[0], prompts.colour.weight[prompts.colours.index("red")])
    torch.testing.assert_close(prompts([obj], [("size", "category")])[0],
                               prompts.size.weight[0] + prompts.category.weight[prompts.categories.index("box")])


def test_pretraining_is_deterministic_and_trains_the_decoder():
    a, b = decoder(), decoder()
    start = {k: v.clone() for k, v in a.state_dict().items()}
    history = pretrain_pixel_decoder(a, small(descriptions="partial"), progress=False)
    pretrain_pixel_decoder(b, small(descriptions="partial"), progress=False)
    assert [r["step"] for r in history] == [1, 2, 3]
    assert all(0.0 <= r["iou"] <= 1.0 and r["loss"] > 0 for r in history)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], msg=k)
    changed = [k for k, v in a.state_dict().items() if not torch.equal(v, start[k])]
    assert any("sam_mask_decoder" in k for k in changed) and any("image_encoder" in k for k in changed)


def test_refine_phase_continues_the_same_decoder_and_descriptions():
    # one run with a refine phase == the first phase, then a second call with the refined settings on its result
    cfg = small(steps=2, refine={"steps": 2, "lr": "5e-4", "descriptions": "partial", "seed": 1})
    assert cfg.refined() == small(steps=2, lr=5e-4, descriptions="partial", seed=1)
    a, pa = decoder(), AttributePrompts(decoder().cfg.prompt_dim)
    b, pb = decoder(), AttributePrompts(decoder().cfg.prompt_dim)
    pb.load_state_dict(pa.state_dict())
    history = pretrain_pixel_decoder(a, cfg, progress=False, prompts=pa)
    pretrain_pixel_decoder(b, small(steps=2), progress=False, prompts=pb)
    pretrain_pixel_decoder(b, cfg.refined(), progress=False, prompts=pb)
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], msg=k)
    torch.testing.assert_close(pa.colour.weight, pb.colour.weight)
    for bad in ({"stepz": 1}, {"descriptions": "some"}, {"refine": {"steps": 1}}, [1]):
        with pytest.raises(ConfigError):
            small(refine=bad).validate()


def test_pretraining_lowers_the_mask_loss():
    history = pretrain_pixel_decoder(decoder(), small(steps=120, lr=2e-3, log_every=40), progress=False)
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < 0.8 * first, history


def test_bad_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="mode"):
        small(mode="sideways").validate()
    with pytest.raises(ConfigError, match="frames"):
        small(frames=9).validate()
    with pytest.raises(ConfigError, match="descriptions"):
        small(descriptions="some").validate()
    with pytest.raises(ConfigError, match="PromptPretrainConfig"):
        TrainConfig.from_dict(recipe("unused", prompt_pretrain={"stepz": 3}))


def test_trainer_runs_stage_zero_once_and_reuses_it(tmp_path, monkeypatch):
    stage0 = {"steps": 2, "clips_per_step": 1, "frames": 2, "mode": "framewise", "world": SMALL_WORLD, "log_every": 1}
    cfg = TrainConfig.from_dict(recipe(tmp_path, steps=1, prompt_pretrain=stage0))
    calls = []
    real = trainer.prompt_pretrain_stage

    def spy(cfg_, model, *args, **kwargs):
        calls.append({k: v.clone() for k, v in model.pixel_decoder.state_dict().items()})
        return real(cfg_, model, *args, **kwargs)

    monkeypatch.setattr(trainer, "prompt_pretrain_stage", spy)
    trainer.train(cfg, progress=False)
    saved = tmp_path / trainer.PROMPT_PRETRAIN_FILE
    weights = load_file(str(saved))
    assert [r["step"] for r in json.loads((saved.parent / "history.json").read_text())] == [1, 2]
    assert any(not torch.equal(weights[k], calls[0][k]) for k in weights)  # stage 0 changed SAM2
    # its learnt descriptions are kept beside it (the perfect-description eval prompts SAM2 with them)
    kept = load_file(str(saved.parent / trainer.ATTRIBUTE_PROMPTS_FILE))
    descriptions = AttributePrompts(kept["colour.weight"].shape[1])
    descriptions.load_state_dict(kept)
    assert descriptions.colour.weight.abs().sum() > 0

    # A second start of the same run folder loads stage 0's result instead of training it again.
    def no_training(*args, **kwargs):
        raise AssertionError("stage 0 ran twice")

    monkeypatch.setattr("training.synthetic.prompt_pretrain.pretrain_pixel_decoder", no_training)
    model = trainer.build_model(cfg)
    real(cfg, model, tmp_path, 0, resuming=False, progress=False)
    for k, v in model.pixel_decoder.state_dict().items():
        torch.testing.assert_close(v, weights[k], msg=k)

    # A resume whose stage-0 weights are gone cannot rebuild its start: a typed error, not a silent retrain.
    saved.unlink()
    with pytest.raises(MissingWeightsError, match="prompt_pretrain"):
        trainer.train(cfg, resume=tmp_path, progress=False)


def test_stage_zero_trains_sam2_even_when_the_recipe_freezes_it(tmp_path):
    stage0 = {"steps": 2, "clips_per_step": 1, "frames": 2, "mode": "framewise", "world": SMALL_WORLD, "log_every": 1}
    frozen_sam2 = {"trainable": ["llm", "embeddings", "lm_head", "image_adapter", "video_adapter", "seg_adapter"]}
    cfg = TrainConfig.from_dict(recipe(tmp_path, steps=1, prompt_pretrain=stage0, model_overrides=frozen_sam2))
    model = trainer.build_model(cfg)
    start = {k: v.clone() for k, v in model.pixel_decoder.state_dict().items()}
    trainer.prompt_pretrain_stage(cfg, model, tmp_path, 0, resuming=False, progress=False)
    changed = [k for k, v in model.pixel_decoder.state_dict().items() if not torch.equal(v, start[k])]
    assert any("sam_mask_decoder" in k for k in changed) and any("image_encoder" in k for k in changed)
    assert not any(p.requires_grad for p in model.pixel_decoder.parameters())  # frozen again for stage 1
    assert all(p.requires_grad for p in model.seg_adapter.parameters())


def load_eval_script(name: str = "eval_default_model"):
    """benchmarks/{name}.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


class _IdPrompts:
    """Stand-in for AttributePrompts: object k's prompt is one-hot k (shifted by ``shift`` to misidentify)."""

    def __init__(self, shift=0):
        self.shift, self.kept = shift, []

    def __call__(self, objects, keep=None):
        self.kept.append(keep)
        return torch.stack([torch.nn.functional.one_hot(torch.tensor(o.obj_id + self.shift), 16).float()
                            for o in objects])


class _MaskDecoder:
    """Stand-in for SAM2: decodes a prompt into the (full-resolution) logits of the objects it is one-hot on."""

    def __init__(self, clip):
        self.clip = clip

    def preprocess(self, frames):
        return frames

    def encode_frames(self, pixels):
        return pixels

    def decode(self, features, prompts, mode):
        on = [k for k in range(1, len(self.clip.masks) + 1) if prompts[0, k] > 0]  # shifted past the last: none
        masks = np.any([self.clip.object_masks(k) for k in on], axis=0) if on else np.zeros(self.clip.frames.shape[:3], bool)
        return torch.as_tensor(np.where(masks, 10.0, -10.0))[None].float()


def test_stage0_eval_prompts_each_expression_with_its_objects_descriptions():
    from training.synthetic.generate import clip_seed

    bench = load_eval_script()
    world = WorldConfig(num_frames=4, height=64, width=64)
    clip = make_clip(clip_seed(0, "test", 0), world, clip_id="test_000000")
    right = bench.evaluate_stage0(_MaskDecoder(clip), _IdPrompts(), 1, height=64, width=64, num_frames=4, progress=False)
    rows = right["per_expression"]
    assert [r["expression"] for r in rows] == [e.text for e in clip.expressions]
    assert all(r["J"] == 1.0 and r["F"] == 1.0 for r in rows)  # the referred objects' own masks, every frame
    wrong = bench.evaluate_stage0(_MaskDecoder(clip), _IdPrompts(shift=1), 1, height=64, width=64, num_frames=4,
                                  progress=False)
    assert wrong["referring"]["all"]["J"] < 0.5
    # the shifted prompt segments the next object: counted as another object's masks, never for the right prompt
    assert right["referring"]["all"]["other_object_rate"] == 0.0
    shifted = [r for r in wrong["per_expression"] if r["J"] == 0.0 and r["J_other"] == 1.0]
    assert shifted and wrong["referring"]["all"]["other_object_rate"] == len(shifted) / len(rows)
    by_stated = right["referring"]["attribute_by_stated"]
    attribute = [e for e in clip.expressions if e.kind == "attribute"]
    assert sum(r["num_expressions"] for r in by_stated.values()) == len(attribute)
    assert set(by_stated) == {"+".join(e.stated) for e in attribute}
    by_asks = right["referring"]["motion_by_asks"]
    motion = [e for e in clip.expressions if e.kind == "motion"]
    assert sum(r["num_expressions"] for r in by_asks.values()) == len(motion) and set(by_asks) <= {"direction", "stops", "static"}
    asks = {r["expression"]: r["asks"] for r in rows}
    for e in clip.expressions:  # what each asks follows from its words
        words = e.text.split()
        expected = (None if e.kind == "attribute" else "static" if {"still", "static", "not"} & set(words)
                    else "stops" if "stops" in words else "direction")
        assert asks[e.text] == expected, e.text
    assert "motion expressions by what they ask" in bench.format_table(wrong)
    stated = _IdPrompts()
    bench.evaluate_stage0(_MaskDecoder(clip), stated, 1, height=64, width=64, num_frames=4, descriptions="stated",
                          progress=False)
    # each expression is described by what it states: "the red object" by its colour, "the object that stops" by nothing
    expected = [[tuple(a for a in ("colour", "category", "size") if a in e.query)] for e in clip.expressions]
    assert stated.kept == expected and () in [k[0] for k in expected] and ("colour",) in [k[0] for k in expected]


def test_stage0_eval_needs_the_descriptions(tmp_path):
    bench = load_eval_script()
    (tmp_path / "pixel_decoder.safetensors").write_bytes(b"")
    with pytest.raises(MissingWeightsError, match="attribute_prompts"):
        bench.load_stage0(None, tmp_path)


def test_paired_difference_matches_expressions_by_clip_and_text():
    bench = load_eval_script()

    def rows(scores):
        return {"per_expression": [{"video": v, "expression": x, "kind": k, "JF": jf} for v, x, k, jf in scores]}

    before = rows([("c0", "the red car", "attribute", 0.5), ("c1", "the red car", "attribute", 0.9),
                   ("c0", "the car moving up", "motion", 0.2), ("c1", "the ball", "attribute", 0.4)])
    # listed in another order, one expression the baseline lacks (skipped), one the new run lacks (skipped)
    after = rows([("c1", "the red car", "attribute", 0.8), ("c0", "the car moving up", "motion", 0.6),
                  ("c0", "the red car", "attribute", 0.7), ("c2", "the box", "attribute", 0.0)])
    diff = bench.paired_difference(after, before)
    assert diff["attribute"]["n"] == 2 and diff["attribute"]["mean"] == pytest.approx(0.05)
    assert diff["attribute"]["sem"] == pytest.approx(np.std([0.2, -0.1], ddof=1) / np.sqrt(2))
    assert diff["motion"]["n"] == 1 and diff["motion"]["mean"] == pytest.approx(0.4)
    assert bench.paired_difference(before, before)["attribute"]["mean"] == 0.0
