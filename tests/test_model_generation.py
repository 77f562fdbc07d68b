"""Grounded generation of the tiny VideoGLaMM: KV cache vs recompute, [SEG] states, chat/segment, save/load."""

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vglamm.errors import MissingWeightsError, NoTargetFoundError
from vglamm.modeling import VideoGLaMM, VideoGLaMMConfig
from vglamm.modeling.generation import position_ids_from_mask
from vglamm.modeling.modeling_videoglamm import resolve_model_path
from vglamm.sample import GroundedSample


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VideoGLaMM.from_config(VideoGLaMMConfig.tiny())
    # Random LoRA B is zero; give the adapters weight so the cache test covers them too.
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return m.eval()


def video(t=6, h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (t, h, w, 3), dtype=np.uint8)


def scripted(model, monkeypatch, text):
    """Force the LM head to emit ``text`` then <|end|>: deterministic [SEG] placement for tests."""
    tok = model.tokenizer
    script = tok(text, add_special_tokens=False).input_ids + [tok.convert_tokens_to_ids("<|end|>")]
    lm, real = model.language_model, model.language_model.logits
    step = {"k": 0}

    def logits(hidden):
        out = real(hidden)
        forced = torch.full_like(out, -1e4)
        forced[..., script[min(step["k"], len(script) - 1)]] = 0.0
        step["k"] += 1
        return forced

    monkeypatch.setattr(lm, "logits", logits)
    return script


def test_kv_cache_equals_recompute_token_for_token(model):
    vids = [model._resolve_video(video(seed=1)), model._resolve_video(video(t=9, seed=2))]
    prompts = ["Describe the video.", "What is the red car doing in this video? Please answer."]  # different lengths
    cached = model.generate_grounded(vids, prompts, max_new_tokens=12, use_cache=True)
    uncached = model.generate_grounded(vids, prompts, max_new_tokens=12, use_cache=False)
    assert cached.tokens == uncached.tokens
    assert all(len(t) == 12 for t in cached.tokens)
    # and one row alone decodes the same as inside the left-padded batch
    single = model.generate_grounded(vids[:1], prompts[:1], max_new_tokens=12)
    assert single.tokens[0] == cached.tokens[0]


def test_seg_states_in_generation_match_training_positions(model, monkeypatch):
    script = scripted(model, monkeypatch, "<p> a red box </p> [SEG] and [SEG] then <p> dog </p>[SEG].")
    vid = model._resolve_video(video())
    res = model.generate_grounded([vid], ["Describe the video."], max_new_tokens=40)
    assert res.tokens[0] == script and res.finished == [True]
    assert len(res.seg_hidden[0]) == 3
    # recompute the full sequence in one pass and read the states before each [SEG]
    ids, mask = model._encode_prompts([model.processor.prompt_ids("Describe the video.") + script])
    clip, vpix = model.processor.llm_pixels(vid.llm_frames)
    embeds, mask, _, merged = model.merge_inputs(ids, mask, model.encode_video(clip[None], vpix[None]))
    with torch.no_grad():
        hidden, _ = model.language_model.hidden(embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    expected = hidden[0][model.seg_predicting_mask(merged)[0]]
    assert expected.shape[0] == 3
    assert torch.allclose(torch.stack(res.seg_hidden[0]), expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["framewise", "temporal"])
def test_chat_returns_masks_for_every_frame(model, monkeypatch, mode):
    scripted(model, monkeypatch, "<p> a red box </p> [SEG] moves while <p> a dog </p> [SEG] runs.")
    frames = video(t=7)
    answer = model.chat(frames, "Describe the video.", mode=mode, max_new_tokens=40)
    assert answer.text == "a red box moves while a dog runs."
    assert answer.raw_text.startswith("<p> a red box </p> [SEG]")
    assert [o.phrase for o in answer.objects] == ["a red box", "a dog"]
    for obj in answer.objects:
        assert obj.masks.shape == (7, 24, 32) and obj.masks.dtype == bool
    assert answer.reason is None and len(answer.llm_frame_indices) == model.cfg.num_frames


def test_chat_without_seg_has_reason_and_segment_raises(model, monkeypatch):
    scripted(model, monkeypatch, "There is nothing like that.")
    answer = model.chat(video(), "Where is the unicorn?")
    assert answer.objects == [] and "no [SEG]" in answer.reason
    with pytest.raises(NoTargetFoundError, match="the unicorn"):
        model.segment(video(), "the unicorn")


def test_segment_and_batches(model, monkeypatch):
    scripted(model, monkeypatch, "It is [SEG].")
    masks = model.segment(video(t=5), "the red box", mode="framewise")
    assert masks.shape == (5, 24, 32) and masks.dtype == bool
    scripted(model, monkeypatch, "It is [SEG].")  # restart the script: both rows decode it in step
    answers = model.chat_batch([video(t=4), video(t=6, seed=3)], ["Q1?", None], max_new_tokens=10)
    assert [a.objects[0].masks.shape for a in answers] == [(4, 24, 32), (6, 24, 32)]


def test_save_load_identical(model, tmp_path):
    out_dir = model.save_pretrained(tmp_path / "m")
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in out_dir.iterdir()}
    loaded = VideoGLaMM.from_pretrained(out_dir, device="cpu")
    assert loaded.cfg == model.cfg and loaded.seg_token_id == model.seg_token_id
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    vid = [model._resolve_video(video())]
    a = model.generate_grounded(vid, ["Describe the video."], max_new_tokens=8)
    b = loaded.generate_grounded(vid, ["Describe the video."], max_new_tokens=8)
    assert a.tokens == b.tokens
    # saving again over the folder replaces it atomically
    model.save_pretrained(out_dir)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    # a loaded model saves the same files it was loaded from (a re-exported default model diffs only in weights)
    again = loaded.save_pretrained(tmp_path / "again")
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json"):
        assert (again / name).read_bytes() == (out_dir / name).read_bytes(), name


def test_load_in_half_precision_builds_the_skeleton_in_it(model, tmp_path, monkeypatch):
    out_dir = model.save_pretrained(tmp_path / "m")
    built_in = []
    real = VideoGLaMM.from_config.__func__

    def spy(cls, *args, **kwargs):
        built_in.append(torch.get_default_dtype())
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(VideoGLaMM, "from_config", classmethod(spy))
    loaded = VideoGLaMM.from_pretrained(out_dir, device="cpu", torch_dtype=torch.bfloat16)
    assert built_in == [torch.bfloat16] and torch.get_default_dtype() == torch.float32
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k, v in sd2.items():
        if k.startswith("pixel_decoder.") or not v.is_floating_point():  # SAM2 stays float32, exactly as saved
            assert v.dtype == sd[k].dtype and torch.equal(v, sd[k]), k
        else:
            assert v.dtype == torch.bfloat16 and torch.equal(v, sd[k].to(torch.bfloat16)), k


def test_missing_models_raise(tmp_path):
    with pytest.raises(MissingWeightsError, match="not a saved VideoGLaMM"):
        resolve_model_path(tmp_path)
    with pytest.raises(MissingWeightsError, match="no model folder"):
        resolve_model_path("no-such-model-name")


def test_visual_readout_prompts_agree_between_training_and_chat(monkeypatch):
    """With the L->V adapter's visual readout (adapters.seg_attention_heads), the prompt a [SEG] gets in the training
    forward (teacher forced) is the one chat gives it, and it depends on the video."""
    torch.manual_seed(0)
    cfg = VideoGLaMMConfig.tiny()
    cfg.adapters.seg_attention_heads = 2
    m = VideoGLaMM.from_config(cfg).eval()
    with torch.no_grad():
        m.seg_adapter.readout.weight.normal_()
    text = "<p> a red box </p> [SEG]."
    scripted(m, monkeypatch, text)
    seen = []
    real = m.pixel_decoder.predict_video
    monkeypatch.setattr(m.pixel_decoder, "predict_video", lambda frames, prompts, **kw: (seen.append(prompts),
                                                                                        real(frames, prompts, **kw))[1])
    n = cfg.num_frames  # chat then gives the LLM the very frames of the training sample
    frames = video(t=n)
    m.chat(frames, "Where is the red box?", max_new_tokens=20)
    monkeypatch.undo()
    sample = GroundedSample(frames=frames, conversation=[{"role": "user", "content": "Where is the red box?"},
                                                         {"role": "assistant", "content": text}],
                            masks=np.zeros((1, n, 24, 32), bool))
    with torch.no_grad():
        trained = m(m.processor([sample]), decode_masks=False).seg_prompts
        other = m(m.processor([dataclasses.replace(sample, frames=video(t=n, seed=5))]), decode_masks=False).seg_prompts
    assert torch.allclose(seen[0], trained, atol=1e-4)
    assert not torch.allclose(other, trained, atol=1e-3)
    loaded = VideoGLaMM.from_pretrained(m.save_pretrained(Path(tempfile.mkdtemp()) / "m"))
    assert loaded.cfg.adapters.seg_attention_heads == 2
    assert torch.equal(loaded.seg_adapter.readout.weight, m.seg_adapter.readout.weight)
