"""VideoGLaMM components on the tiny preset: config, tokenizer, processor, adapters, encoders, losses."""

import json

import numpy as np
import pytest
import torch

from vglamm.errors import ConfigError, DataFormatError
from vglamm.modeling import VideoGLaMM, VideoGLaMMConfig
from vglamm.modeling.adapters import SegAdapter, VisionAdapter
from vglamm.modeling.configuration import IGNORE_INDEX, VIDEO_PLACEHOLDER_ID
from vglamm.modeling.image_encoder import CLIPImageEncoder, clip_preprocess
from vglamm.modeling.language_model import build_tokenizer
from vglamm.modeling.losses import dice_sum, mask_losses, next_token_loss, sigmoid_bce_sum
from vglamm.modeling.processing import (VideoGLaMMProcessor, clean_answer, gcg_prompt, phrase_token_weights,
                                        referring_prompt, seg_phrases)
from vglamm.sample import GroundedSample


@pytest.fixture(scope="module")
def cfg():
    return VideoGLaMMConfig.tiny()


@pytest.fixture(scope="module")
def tokenizer(cfg):
    return build_tokenizer(cfg.language_model)


def _sample(t=5, h=20, w=24, answer="<p> a red box </p> [SEG] and <p> a dog </p> [SEG].", n=2):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8)
    masks = np.zeros((n, t, h, w), bool)
    masks[:, :, 2:10, 3:12] = True
    conv = [{"role": "user", "content": "Describe the video."}, {"role": "assistant", "content": answer}]
    return GroundedSample(frames, conv, masks, source="unit")


def test_config_json_roundtrip_and_presets(cfg):
    again = VideoGLaMMConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    paper = VideoGLaMMConfig.paper()
    assert paper.image_encoder.pretrained == "openai/clip-vit-large-patch14-336"
    assert paper.language_model.pretrained == "microsoft/Phi-3-mini-4k-instruct"
    assert paper.pixel_decoder.ckpt_path.endswith("sam2_hiera_large.pt")
    assert paper.video_encoder_ckpt.endswith(".pt")
    assert paper.visual_tokens_per_video == 16 * 144 + 16 * 64
    assert paper.trainable_groups() == ("lora", "embeddings", "lm_head", "seg_adapter", "mask_decoder")
    assert VideoGLaMMConfig.from_dict(json.loads(paper.to_json())) == paper
    with pytest.raises(ConfigError):
        VideoGLaMMConfig.tiny(trainable=["nonsense"])
    with pytest.raises(ConfigError):
        VideoGLaMMConfig.tiny(num_frames=3)
    with pytest.raises(ConfigError):
        VideoGLaMMConfig.preset("huge")


def test_tokenizer_has_plain_seg_token(tokenizer):
    seg = tokenizer.convert_tokens_to_ids("[SEG]")
    assert seg == len(tokenizer) - 1
    assert "[SEG]" not in tokenizer.all_special_tokens
    ids = tokenizer("<|user|>\nIt is [SEG].<|end|>", add_special_tokens=False).input_ids
    assert ids.count(seg) == 1
    assert tokenizer.decode(ids) == "<|user|>\nIt is [SEG].<|end|>"


def test_processor_layout_labels_and_pixels(cfg, tokenizer):
    proc = VideoGLaMMProcessor(tokenizer, cfg)
    short = _sample(answer="It is [SEG].", n=1)
    batch = proc([_sample(), short])
    ids, labels, attn = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == attn.shape and ids.shape[0] == 2
    assert ((ids == VIDEO_PLACEHOLDER_ID).sum(1) == 1).all()
    seg, end = proc.seg_token_id, tokenizer.convert_tokens_to_ids("<|end|>")
    for i, answer in enumerate(["<p> a red box </p> [SEG] and <p> a dog </p> [SEG].", "It is [SEG]."]):
        labelled = labels[i][labels[i] != IGNORE_INDEX].tolist()
        assert labelled[-1] == end  # the closing <|end|> is a target
        assert tokenizer.decode(labelled[:-1]) == answer
        # the placeholder follows the first user header, before the question
        text = tokenizer.decode([t for t in ids[i][attn[i] == 1].tolist() if t >= 0])
        assert text.startswith("<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\n\nDescribe the video.")
    assert batch["num_seg"].tolist() == [2, 1]
    assert (ids[1][attn[1] == 0] == proc.pad_token_id).all()  # right padding
    n = cfg.num_frames
    assert batch["clip_pixels"].shape == (2, n, 3, 64, 64)
    assert batch["video_pixels"].shape == (2, n, 3, 56, 56)
    assert batch["sam_pixels"][0].shape == (5, 3, 128, 128)
    # the losses see the masks at the video's own size (the reference's), or at SAM2's low-res size (S/4)
    assert batch["target_masks"][0].shape == (2, 5, 20, 24)
    assert batch["target_masks"][1].shape == (1, 5, 20, 24)
    assert torch.equal(batch["target_masks"][0].bool(), torch.as_tensor(_sample().masks))
    low = VideoGLaMMProcessor(tokenizer, VideoGLaMMConfig.tiny(mask_target="lowres"))([_sample()])["target_masks"][0]
    assert low.shape == (2, 5, 32, 32)
    assert set(low.unique().tolist()) == {0.0, 1.0}


def test_processor_rejects_mask_count_mismatch(cfg, tokenizer):
    proc = VideoGLaMMProcessor(tokenizer, cfg)
    with pytest.raises(DataFormatError, match="masks"):
        proc([_sample(n=1)])


def test_prompts_and_answer_parsing():
    assert referring_prompt("the red car") == "What is the red car in this video? Please respond with segmentation masks."
    assert "interleaved segmentation masks" in gcg_prompt()
    raw = "<p> a red box </p> [SEG] moves while <p> a dog </p> [SEG] runs.<|end|>"
    assert clean_answer(raw) == "a red box moves while a dog runs."
    assert seg_phrases(raw) == ["a red box", "a dog"]
    assert seg_phrases("It is [SEG].") == ["It is"]


def test_adapters_pool_after_projection():
    a = VisionAdapter(32, 64, pool=4)
    out = a(torch.randn(2, 3, 64, 32))  # 8x8 grid → 4x4
    assert out.shape == (2, 3 * 16, 64)
    # pooling is the average of the projected tokens of each 2x2 cell
    x = torch.randn(1, 1, 64, 32)
    proj = a.proj(x).reshape(8, 8, 64)
    assert torch.allclose(a(x)[0, 0], proj[:2, :2].mean((0, 1)), atol=1e-6)
    assert set(dict(a.named_parameters())) == {"proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias"}
    s = SegAdapter(64, 256)
    assert s(torch.randn(5, 64)).shape == (5, 256)
    assert isinstance(s.proj[1], torch.nn.ReLU)


def test_phrase_token_weights_average_each_segs_own_phrase():
    SEG, OPEN, CLOSE = 9, 7, 8
    # row 0: x <p> a b </p> [SEG] c <p> d </p> [SEG] [SEG]   row 1: it is [SEG] (no phrase)   row 2: </p> [SEG]
    ids = torch.tensor([[1, OPEN, 2, 3, CLOSE, SEG, 4, OPEN, 5, CLOSE, SEG, SEG],
                        [1, 2, SEG, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                        [2, CLOSE, SEG, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    predicting = torch.zeros_like(ids, dtype=torch.bool)
    predicting[:, :-1] = ids[:, 1:] == SEG
    w = phrase_token_weights(ids, predicting, SEG, OPEN, CLOSE)
    assert w.shape == (5, 12)
    expected = torch.zeros(5, 12)
    expected[0, 2:4] = 0.5  # "a b"
    expected[1, 8] = 1.0  # "d", not "a b" again
    assert torch.equal(w, expected)  # the third [SEG] of row 0, row 1 and the unopened </p> of row 2: no phrase


def test_seg_adapter_visual_readout_reads_each_states_own_video():
    torch.manual_seed(0)
    plain, reading = SegAdapter(32, 16), SegAdapter(32, 16, heads=4, num_visual=6)
    reading.proj.load_state_dict(plain.proj.state_dict())
    hidden, visual, rows = torch.randn(5, 32), torch.randn(2, 6, 32), torch.tensor([0, 0, 1, 1, 1])
    # the readout starts at zero: the adapter starts as the paper's MLP
    assert torch.equal(reading(hidden, visual, rows), plain(hidden))
    with torch.no_grad():
        reading.readout.weight.normal_()
    before = reading(hidden, visual, rows)
    changed = visual.clone()
    changed[1] += torch.randn(6, 32)
    after = reading(hidden, changed, rows)
    assert torch.equal(after[:2], before[:2]) and not torch.allclose(after[2:], before[2:])
    # one video for all states (inference) is the same as pointing every row at it
    assert torch.allclose(reading(hidden, visual[1:]), reading(hidden, visual, torch.ones(5, dtype=torch.long)))
    # the phrase's words steer where the state reads
    phrase = torch.randn(5, 32)
    assert not torch.allclose(reading(hidden, visual, rows, phrase), before)
    with pytest.raises(ConfigError, match="visual tokens"):
        reading(hidden)
    with pytest.raises(ConfigError, match="built for 6 visual tokens"):
        reading(hidden, torch.randn(1, 5, 32))
    with pytest.raises(ConfigError, match="must divide"):
        SegAdapter(32, 16, heads=3, num_visual=6)


def test_clip_encoder_shapes(cfg):
    frames = torch.randint(0, 255, (3, 30, 50, 3), dtype=torch.uint8)
    pix = clip_preprocess(frames, 64, cfg.image_encoder.mean, cfg.image_encoder.std)
    assert pix.shape == (3, 3, 64, 64)
    enc = CLIPImageEncoder(cfg.image_encoder)
    tokens = enc(pix[None])
    assert tokens.shape == (1, 3, 64, 32)  # 8x8 patches, class token dropped, width 32


def test_losses():
    target = torch.zeros(2, 8, 8)
    target[:, 2:5, 2:5] = 1
    perfect = (target * 2 - 1) * 50
    assert dice_sum(perfect, target) < 1e-3
    assert sigmoid_bce_sum(perfect, target) < 1e-3
    assert dice_sum(-perfect, target) > 1.9
    bce, dice = mask_losses([perfect[None]], [target[None]])
    assert bce < 1e-3 and dice < 1e-3
    zero_bce, zero_dice = mask_losses([], [])
    assert zero_bce == 0 and zero_dice == 0
    logits = torch.randn(1, 4, 10)
    labels = torch.full((1, 4), IGNORE_INDEX)
    assert next_token_loss(logits, labels) == 0
    labels[0, 2] = 3
    assert torch.isclose(next_token_loss(logits, labels), torch.nn.functional.cross_entropy(logits[0, 1:2], labels[0, 2:3]))


def test_a_model_built_under_a_device_context_has_every_tensor_there():
    """from_pretrained builds its skeleton inside ``torch.device(device)``: a weight made outside that context (from
    numpy, say) would stay on the CPU and break CUDA inference. The meta device shows it without a GPU."""
    from vglamm.modeling.modeling_videoglamm import DEFAULT_MODEL, resolve_model_path

    cfg = VideoGLaMMConfig.from_json_file(resolve_model_path(DEFAULT_MODEL) / "config.json")
    tokenizer = build_tokenizer(cfg.language_model)
    with torch.device("meta"):
        model = VideoGLaMM.from_config(cfg, tokenizer=tokenizer)
    elsewhere = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != "meta"]
    assert not elsewhere, elsewhere
