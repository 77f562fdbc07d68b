"""The demonstration model shipped in vglamm/weights/default: loads offline by its short name and grounds the
example clip's red car.

The IoU threshold is set from the held-out numbers (benchmarks/eval_default_model.py, 60 test-split clips): see
MIN_RED_CAR_IOU below.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

import vglamm
from vglamm.modeling import VideoGLaMM
from vglamm.modeling.modeling_videoglamm import builtin_models, resolve_model_path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"

# Measured (60 held-out test clips, benchmarks/eval_default_model.py): attribute J = 0.805 (J&F 0.834), motion J = 0.717
# (J&F 0.751). On the example clip the shipped model scores mean IoU 0.907 on the red car (0.886 on its worst frame).
# The bar sits under the held-out attribute J (a model that stops finding the car fails) and ~0.17 below the 0.907
# measured here; earlier shipped models (attribute J 0.745, 0.80 and 0.83) scored 0.915, 0.912 and 0.916 here, and
# the hour recipe's trial runs 0.889-0.907, so it is not tuned to one model.
MIN_RED_CAR_IOU = 0.74

pytestmark = pytest.mark.skipif("default" not in builtin_models(), reason="vglamm/weights/default is not installed")


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return vglamm.load_default_model(device="cpu")


def test_loads_offline_by_short_name(model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    path = resolve_model_path("default")
    assert path.parent.name == "weights" and (path / "model.safetensors").is_file()
    size = sum(p.stat().st_size for p in path.iterdir())
    assert size < 20 * 2**20  # a few MB: it ships inside the package
    again = VideoGLaMM.from_pretrained("default", device="cpu")
    assert again.cfg.to_dict() == model.cfg.to_dict()
    assert model.cfg.trainable == "all" and model.cfg.use_video_encoder


def test_the_shipped_model_is_what_the_recipe_in_the_repository_builds(model):
    """Its config is the one training/configs/default_model.yaml builds (the polish changes no setting), up to what
    the export fills in: LoRA merged into the LLM, the tokenizer's vocabulary size."""
    from training.recipe import load_recipe
    from training.trainer import apply_overrides
    from vglamm.modeling import VideoGLaMMConfig

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "training" / "configs" / "default_model.yaml")
    built = apply_overrides(VideoGLaMMConfig.preset(recipe.model), recipe.model_overrides).to_dict()
    shipped = model.cfg.to_dict()
    assert built["language_model"].pop("use_lora") and not shipped["language_model"].pop("use_lora")
    assert built["language_model"]["llm_config"].pop("vocab_size", None) is None  # set from the tokenizer
    assert shipped["language_model"]["llm_config"].pop("vocab_size") == len(model.tokenizer)
    assert built == shipped
    assert shipped["pixel_decoder"]["location_prompt"] and model.pixel_decoder.location_embed.abs().sum() > 0


def test_grounds_the_red_car_in_the_example_clip(model):
    from vglamm.io.masks import load_rle_json

    gt_file = load_rle_json(EXAMPLES / "red_car_masks.json")
    car = next(o for o in gt_file["objects"] if o["phrase"] == "a red car")
    gt = np.asarray(car["masks"], bool)
    pred = model.segment(EXAMPLES / "red_car.mp4", "the red car")
    assert pred.shape == gt.shape
    inter = (pred & gt).sum(axis=(1, 2))
    union = (pred | gt).sum(axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    assert iou.mean() > MIN_RED_CAR_IOU, f"mean IoU {iou.mean():.3f} over {len(iou)} frames"


def test_held_out_evaluation_scores_and_checks_names(model):
    from tests.test_prompt_pretrain import load_eval_script

    bench = load_eval_script()
    from training.synthetic.generate import clip_seed, make_clip
    from training.synthetic.language import named_objects
    from training.synthetic.world import WorldConfig
    from vglamm.modeling.processing import seg_phrases

    with torch.inference_mode():
        result = bench.evaluate(model, 1, gcg=False, progress=False)
    clip = make_clip(clip_seed(0, "test", 0), WorldConfig(num_frames=16), clip_id="test_000000")
    referred = {e.text: list(e.obj_ids) for e in clip.expressions}
    rows = result["per_expression"]
    assert [r["expression"] for r in rows] == [e.text for e in clip.expressions]
    for r in rows:  # "named" is exactly "the answer's first phrase picks out the referred object(s) alone"
        phrases = seg_phrases(r["answer"])
        said = named_objects(clip.scene, phrases[0]) if phrases else None
        assert r["named"] == (said == referred[r["expression"]])
        assert r["names_an_object"] == (said is not None and set(said) <= {o.obj_id for o in clip.scene.objects})
        assert 0.0 <= r["J"] <= 1.0 and 0.0 <= r["F"] <= 1.0
    agg = result["referring"]["all"]
    assert agg["named_rate"] == pytest.approx(np.mean([r["named"] for r in rows]))
    assert agg["names_an_object_rate"] >= agg["named_rate"]
    assert agg["J"] == pytest.approx(np.mean([r["J"] for r in rows]))
