"""Training forward of the tiny VideoGLaMM: shapes, [SEG] positions, the trainable set, overfitting one clip."""

import numpy as np
import pytest
import torch

from vglamm.modeling import VideoGLaMM, VideoGLaMMConfig
from vglamm.modeling.configuration import IGNORE_INDEX
from vglamm.sample import GroundedSample

ANSWER = "<p> a red box </p> [SEG] moves down while <p> a blue box </p> [SEG] moves right."


def moving_boxes(t=4, h=32, w=32):
    """A red box moving down and a blue box moving right, with their masks."""
    frames = np.full((t, h, w, 3), 30, np.uint8)
    masks = np.zeros((2, t, h, w), bool)
    for i in range(t):
        frames[i, 4 + i:14 + i, 4:14] = (220, 30, 30)
        masks[0, i, 4 + i:14 + i, 4:14] = True
        frames[i, 18:28, 16 + i:26 + i] = (30, 30, 220)
        masks[1, i, 18:28, 16 + i:26 + i] = True
    conv = [{"role": "user", "content": "Describe the video."}, {"role": "assistant", "content": ANSWER}]
    return GroundedSample(frames, conv, masks, source="boxes")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VideoGLaMM.from_config(VideoGLaMMConfig.tiny())


def test_forward_shapes_and_losses(model):
    batch = model.processor([moving_boxes(), moving_boxes(t=3)])
    out = model(batch)
    cfg = model.cfg
    merged = batch["input_ids"].shape[1] - 1 + cfg.visual_tokens_per_video
    assert out.logits.shape == (2, merged, len(model.tokenizer))
    assert [m.shape for m in out.mask_logits] == [(2, 4, 32, 32), (2, 3, 32, 32)]
    for v in (out.loss, out.ce_loss, out.bce_loss, out.dice_loss):
        assert torch.isfinite(v)
    expected = cfg.ce_weight * out.ce_loss + cfg.bce_weight * out.bce_loss + cfg.dice_weight * out.dice_loss
    assert torch.isclose(out.loss.detach(), expected)
    # temporal decoding in training, and targets at input size
    out_t = model(batch, mode="temporal")
    assert [m.shape for m in out_t.mask_logits] == [(2, 4, 32, 32), (2, 3, 32, 32)]


def test_the_processor_prepares_pixels_where_it_is_told(model):
    """Frames are resized and normalised on the given device (a GPU's, in training), the text stays on the CPU."""
    samples = [moving_boxes(), moving_boxes(t=3)]
    here, there = model.processor(samples), model.processor(samples, device="meta")
    for key in ("clip_pixels", "video_pixels"):
        assert there[key].device.type == "meta" and there[key].shape == here[key].shape
    assert [p.device.type for p in there["sam_pixels"]] == ["meta", "meta"]
    assert [p.shape for p in there["sam_pixels"]] == [p.shape for p in here["sam_pixels"]]
    assert there["input_ids"].device.type == "cpu" and torch.equal(there["input_ids"], here["input_ids"])
    on_cpu = model.processor(samples, device="cpu")
    assert torch.equal(on_cpu["clip_pixels"], here["clip_pixels"]) and torch.equal(on_cpu["video_pixels"],
                                                                                   here["video_pixels"])


def test_encode_video_layout(model):
    batch = model.processor([moving_boxes()])
    visual = model.encode_video(batch["clip_pixels"], batch["video_pixels"])
    n, a = model.cfg.num_frames, model.cfg.adapters
    assert visual.shape == (1, n * a.image_pool ** 2 + n * a.video_pool ** 2, 64)
    image_part = model.image_adapter(model.image_encoder(batch["clip_pixels"]))
    assert torch.equal(visual[:, :image_part.shape[1]], image_part)  # CLIP tokens first, then InternVideo2


def test_seg_positions_are_the_predicting_positions(model):
    sample = moving_boxes()
    sample.conversation = [{"role": "user", "content": "Is [SEG] here?"},  # a user-typed [SEG] is not a target
                           {"role": "assistant", "content": "<p> a </p> [SEG] [SEG] and <p> b </p>[SEG]."}]
    sample.masks = np.concatenate([sample.masks, sample.masks[:1]])
    batch = model.processor([sample])
    visual = model.encode_video(batch["clip_pixels"], batch["video_pixels"])
    _, _, labels, ids = model.merge_inputs(batch["input_ids"], batch["attention_mask"], visual, batch["labels"])
    mask = model.seg_predicting_mask(ids, labels)[0]
    positions = mask.nonzero().flatten().tolist()
    seg = model.seg_token_id
    answer_segs = [j for j in range(ids.shape[1]) if ids[0, j] == seg and labels[0, j] != IGNORE_INDEX]
    assert len(answer_segs) == 3 and (ids[0] == seg).sum() == 4
    assert positions == [j - 1 for j in answer_segs]
    assert batch["num_seg"].tolist() == [3]
    out = model(batch)
    assert out.mask_logits[0].shape[0] == 3


def _grads_by_group(model):
    model.zero_grad(set_to_none=True)
    out = model(model.processor([moving_boxes()]))
    out.loss.backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_only_the_paper_trainable_set_gets_gradients(model):
    model.set_trainable("paper")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    got = _grads_by_group(model)
    assert got and got <= trainable
    assert any("lora_" in n for n in trainable) and all("lora_" in n or "embed_tokens" in n or "lm_head" in n
                                                        for n in trainable if n.startswith("language_model."))
    assert not any(n.startswith(("image_encoder.", "video_encoder.", "image_adapter.", "video_adapter."))
                   for n in trainable)
    pixel = [n for n in trainable if n.startswith("pixel_decoder.")]
    assert pixel and all(".sam_mask_decoder." in n for n in pixel)
    assert any(n.startswith("seg_adapter.") for n in got)
    assert any(".sam_mask_decoder." in n for n in got)
    assert any("lora_B" in n for n in got)
    frozen = [p for n, p in model.named_parameters() if n not in trainable]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert len(model.trainable_parameters()) == len(trainable)


def test_trainable_everything_and_custom(model):
    try:
        model.set_trainable("all")
        assert all(p.requires_grad for p in model.parameters())
        model.set_trainable(["seg_adapter"])
        got = _grads_by_group(model)
        assert got and all(n.startswith("seg_adapter.") for n in got)
    finally:
        model.set_trainable("paper")


def test_overfit_one_clip_text_and_masks():
    torch.manual_seed(0)
    model = VideoGLaMM.from_config(VideoGLaMMConfig.tiny(trainable="paper"))
    batch = model.processor([moving_boxes()])
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(25):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first or out
    assert out.ce_loss < 0.5 * first.ce_loss
    assert out.bce_loss < 0.5 * first.bce_loss
    assert out.dice_loss < 0.75 * first.dice_loss
