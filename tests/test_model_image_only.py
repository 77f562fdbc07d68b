"""The image-encoder-only variant (``use_video_encoder=False``, the paper's Table 5 ablation)."""

import numpy as np
import pytest
import torch

from vglamm.errors import ConfigError
from vglamm.modeling import VideoGLaMM, VideoGLaMMConfig
from vglamm.sample import GroundedSample


def clip_sample(t=4, h=32, w=32):
    frames = np.full((t, h, w, 3), 30, np.uint8)
    masks = np.zeros((1, t, h, w), bool)
    for i in range(t):
        frames[i, 4 + i:14 + i, 4:14] = (220, 30, 30)
        masks[0, i, 4 + i:14 + i, 4:14] = True
    conv = [{"role": "user", "content": "Segment the red box."}, {"role": "assistant", "content": "It is [SEG]."}]
    return GroundedSample(frames, conv, masks, source="box")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VideoGLaMM.from_config(VideoGLaMMConfig.tiny(use_video_encoder=False))


def test_no_video_encoder_and_no_video_tokens(model):
    cfg = model.cfg
    assert model.video_encoder is None and model.video_adapter is None
    assert not any(n.startswith(("video_encoder.", "video_adapter.")) for n, _ in model.named_parameters())
    assert cfg.visual_tokens_per_video == cfg.num_frames * cfg.adapters.image_pool ** 2
    dual = VideoGLaMMConfig.tiny()
    assert dual.visual_tokens_per_video == cfg.visual_tokens_per_video + cfg.num_frames * cfg.adapters.video_pool ** 2


def test_processor_prepares_no_video_pixels_and_forward_trains(model):
    batch = model.processor([clip_sample()])
    assert batch["video_pixels"] is None
    clip, video = model.processor.llm_pixels(clip_sample().frames)
    assert video is None and clip.shape[0] == model.cfg.num_frames
    visual = model.encode_video(batch["clip_pixels"], None)
    assert visual.shape[1] == model.cfg.visual_tokens_per_video
    out = model(batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.seg_adapter.proj[0].weight.grad is not None  # the paper trainable set: gradients flow
    model.zero_grad(set_to_none=True)


def test_trainable_groups_of_absent_modules_are_empty():
    m = VideoGLaMM.from_config(VideoGLaMMConfig.tiny(use_video_encoder=False, trainable=["video_encoder",
                                                                                         "seg_adapter"]))
    assert {n.split(".")[0] for n, _ in m.named_trainable_parameters()} == {"seg_adapter"}
    m.train()  # no encoder to put in eval mode: must not fail


def test_save_load_and_chat(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = VideoGLaMM.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.cfg.use_video_encoder is False and loaded.video_encoder is None
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    frames = clip_sample(t=6).frames
    gen = torch.Generator().manual_seed(0)
    ans = loaded.chat(frames, "What is the red box in this video?", max_new_tokens=4, generator=gen)
    assert ans.llm_frame_indices is not None and len(ans.llm_frame_indices) == loaded.cfg.num_frames


def test_a_dual_encoder_checkpoint_does_not_load_as_image_only(model, tmp_path):
    import json

    dual = VideoGLaMM.from_config(VideoGLaMMConfig.tiny())
    dual.save_pretrained(tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    cfg["use_video_encoder"] = False
    (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
    from vglamm.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError):
        VideoGLaMM.from_pretrained(tmp_path / "d", device="cpu")


def test_config_round_trip_keeps_the_switch():
    cfg = VideoGLaMMConfig.tiny(use_video_encoder=False)
    assert VideoGLaMMConfig.from_dict(cfg.to_dict()).use_video_encoder is False
    assert VideoGLaMMConfig.from_dict({k: v for k, v in VideoGLaMMConfig.tiny().to_dict().items()
                                       if k != "use_video_encoder"}).use_video_encoder is True
    with pytest.raises(ConfigError):
        VideoGLaMMConfig.from_dict({**cfg.to_dict(), "use_video_encoderz": False})
