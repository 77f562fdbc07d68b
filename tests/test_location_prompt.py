"""SAM2 prompted with where the L->V readout looked (pixel_decoder.location_prompt): the frame mapping, the maps,
the training forward, chat, save/load and a stage-0 start from a decoder without one."""

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import training.trainer as trainer
from tests.test_model_generation import scripted, video
from tests.test_model_training import moving_boxes
from tests.test_trainer import recipe
from training.recipe import TrainConfig
from vglamm.errors import ConfigError, MissingWeightsError
from vglamm.modeling import VideoGLaMM, VideoGLaMMConfig
from vglamm.modeling.processing import llm_frame_indices, nearest_llm_frames


def located_config() -> VideoGLaMMConfig:
    cfg = VideoGLaMMConfig.tiny()
    cfg.adapters.seg_attention_heads = 2
    cfg.pixel_decoder.location_prompt = True
    return cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VideoGLaMM.from_config(located_config())
    with torch.no_grad():  # the vector starts at zero (no effect); give it one, as training would
        m.pixel_decoder.location_embed.normal_(0, 1.0)
    return m.eval()


def test_nearest_llm_frames():
    assert nearest_llm_frames([0, 1, 2, 5, 6, 9], [1, 4, 8]).tolist() == [0, 0, 0, 1, 1, 2]  # ties: the earlier
    frames, llm = np.arange(16), llm_frame_indices(16, 8)
    near = nearest_llm_frames(frames, llm)
    assert (np.abs(llm[near] - frames) <= np.abs(llm[None] - frames[:, None]).min(1)).all()


def test_the_location_prompt_needs_the_readout():
    cfg = VideoGLaMMConfig.tiny()
    cfg.pixel_decoder.location_prompt = True
    with pytest.raises(ConfigError, match="seg_attention_heads"):
        cfg.validate()
    located_config().validate()


def test_without_a_video_encoder_the_maps_come_from_clips_centre_square():
    cfg = located_config()
    cfg.use_video_encoder = False
    m = VideoGLaMM.from_config(cfg)
    p, k = cfg.adapters.image_pool, cfg.num_frames
    attention = torch.zeros(1, k * p * p)
    attention[0, :p * p] = 1.0 / (p * p)  # frame 0 evenly
    attention[0, p * p] = 1.0  # frame 1: all on its top-left cell
    g = 4 * p
    square = m.seg_locations(attention)
    assert square.shape == (1, k, g, g) and not square[0, 0].any()
    assert (square[0, 1, : g // p, : g // p] == p * p - 1).all() and (square[0, 1, g // p:] == -1).all()
    wide = m.seg_locations(attention, frame_size=(32, 64))  # CLIP saw columns 16-47 of 64: the middle half
    assert wide.shape == (1, k, g, g)
    inside = torch.zeros(g, g, dtype=torch.bool)
    inside[:, g // 4: 3 * g // 4] = True
    assert not wide[0, 1][~inside].any()  # beside the crop: no location
    top_left = torch.zeros(g, g, dtype=torch.bool)
    top_left[: g // p, g // 4: g // 4 + g // (2 * p)] = True
    assert (wide[0, 1][top_left] == p * p - 1).all() and (wide[0, 1][inside & ~top_left] == -1).all()
    # trains end to end without one too, square and wide clips propagating in one batch
    out = m(m.processor([moving_boxes(t=4, h=32, w=48), moving_boxes(t=4)]), mode="temporal")
    out.loss.backward()
    assert m.pixel_decoder.location_embed.grad is not None


def test_seg_locations_are_the_readouts_share_per_cell(model):
    cfg = model.cfg
    p, k = cfg.adapters.video_pool, cfg.num_frames
    image = k * cfg.adapters.image_pool ** 2
    attention = torch.zeros(2, image + k * p * p)
    attention[0, image + p * p + 2] = 1.0  # all of it on frame 1, cell 2
    attention[1, :image] = 0.5 / image  # half on CLIP's tokens, half evenly over every video cell
    attention[1, image:] = 0.5 / (k * p * p)
    maps = model.seg_locations(attention)
    assert maps.shape == (2, k, p, p)
    expected = -torch.ones(k, p * p)
    expected[1, 2] = p * p - 1
    torch.testing.assert_close(maps[0].reshape(k, p * p), expected)
    torch.testing.assert_close(maps[1], torch.zeros(k, p, p))  # looked evenly: no location


def test_training_decodes_each_sam2_frame_with_its_llm_frames_map(model):
    """Masks of the training forward are SAM2's decode with the readout's map of each kept frame's nearest LLM
    frame; the mask loss reaches the location vector and, through the maps alone, the readout's attention."""
    samples = [moving_boxes(t=6), moving_boxes(t=3)]
    batch = trainer.subsample_mask_frames(model.processor(samples), 2, np.random.default_rng(1))
    kept = [f.tolist() for f in batch["sam_llm_frames"]]
    whole = model.processor(samples)["sam_llm_frames"]
    assert all(len(f) == 2 for f in kept) and all(set(f) <= set(w.tolist()) for f, w in zip(kept, whole))
    model.zero_grad()
    with torch.no_grad():
        readout = model.seg_adapter.readout.weight.clone()
        model.seg_adapter.readout.weight.zero_()  # the readout's value path off: its attention reaches SAM2 only as maps
    try:
        out = model(batch, mode="temporal")
        out.loss.backward()
        assert model.pixel_decoder.location_embed.grad.abs().sum() > 0
        assert model.seg_adapter.attn.in_proj_weight.grad.abs().sum() > 0
        maps = model.seg_locations(out.seg_attention.detach()).split(batch["num_seg"].tolist())
        with torch.no_grad():
            for i, logits in enumerate(out.mask_logits):
                feats = model.pixel_decoder.encode_frames(batch["sam_pixels"][i])
                prompts = out.seg_prompts.detach().split(batch["num_seg"].tolist())[i]
                alone = model.pixel_decoder.decode(feats, prompts, mode="temporal",
                                                   locations=maps[i][:, batch["sam_llm_frames"][i]])
                resized = torch.nn.functional.interpolate(alone, size=logits.shape[-2:], mode="bilinear",
                                                          align_corners=False)
                torch.testing.assert_close(logits.detach(), resized, atol=1e-4, rtol=1e-4)
    finally:
        with torch.no_grad():
            model.seg_adapter.readout.weight.copy_(readout)
        model.zero_grad()


def test_chat_prompts_every_frame_with_its_nearest_llm_frames_map_and_survives_save_load(model, monkeypatch):
    frames = video(t=11)
    seen = []
    real = model.pixel_decoder.predict_video

    def spy(frames_, prompts, **kw):
        seen.append(kw)
        return real(frames_, prompts, **kw)

    scripted(model, monkeypatch, "<p> a red box </p> [SEG].")
    monkeypatch.setattr(model.pixel_decoder, "predict_video", spy)
    answer = model.chat(frames, "Where is the red box?", max_new_tokens=20)
    assert len(answer.objects) == 1 and answer.objects[0].masks.shape == (11, 24, 32)
    kw = seen[0]
    assert kw["locations"].shape == (1, model.cfg.num_frames, model.cfg.adapters.video_pool,
                                     model.cfg.adapters.video_pool)
    np.testing.assert_array_equal(kw["location_frames"],
                                  nearest_llm_frames(np.arange(11), llm_frame_indices(11, model.cfg.num_frames)))
    monkeypatch.undo()
    loaded = VideoGLaMM.from_pretrained(model.save_pretrained(Path(tempfile.mkdtemp()) / "m"))
    assert loaded.cfg.pixel_decoder.location_prompt
    assert torch.equal(loaded.pixel_decoder.location_embed, model.pixel_decoder.location_embed)
    scripted(loaded, monkeypatch, "<p> a red box </p> [SEG].")
    again = loaded.chat(frames, "Where is the red box?", max_new_tokens=20)
    np.testing.assert_array_equal(again.objects[0].masks, answer.objects[0].masks)


def test_a_stage_zero_file_without_the_location_vector_starts_it_at_zero(tmp_path):
    cfg = TrainConfig.from_dict(recipe(tmp_path, model_overrides={"trainable": "all", "adapters.seg_attention_heads": 2,
                                                                  "pixel_decoder.location_prompt": True},
                                       prompt_pretrain={"steps": 1, "frames": 2, "mode": "framewise",
                                                        "world": {"num_frames": 4, "height": 64, "width": 64}}))
    torch.manual_seed(0)
    plain = VideoGLaMM.from_config(VideoGLaMMConfig.tiny()).pixel_decoder.state_dict()
    path = tmp_path / trainer.PROMPT_PRETRAIN_FILE
    path.parent.mkdir(parents=True)
    save_file(plain, str(path))
    m = VideoGLaMM.from_config(located_config())
    with torch.no_grad():
        m.pixel_decoder.location_embed.fill_(1.0)
    trainer.prompt_pretrain_stage(cfg, m, tmp_path, rank=0, resuming=False, progress=False)
    loaded = m.pixel_decoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in load_file(str(path)).items())
    assert not m.pixel_decoder.location_embed.any()  # fill(1.0) undone: the start stage 0 had
    save_file({**plain, "stray.weight": torch.zeros(1)}, str(path))
    with pytest.raises(MissingWeightsError, match="unexpected"):
        trainer.prompt_pretrain_stage(cfg, m, tmp_path, rank=0, resuming=False, progress=False)
