import dataclasses
import json

import numpy as np
import pytest
import torch

from vglamm.errors import ConfigError, MaskError, MissingWeightsError
from vglamm.modeling.video_encoder import (
    InternVideo2Config,
    InternVideo2Encoder,
    load_internvideo2_checkpoint,
    preprocess_frames,
)


@pytest.fixture(scope="module")
def cfg():
    return InternVideo2Config.tiny()


@pytest.fixture(scope="module")
def encoder(cfg):
    torch.manual_seed(0)
    return InternVideo2Encoder(cfg).eval()


def _pixels(cfg, b=1, t=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 3, cfg.img_size, cfg.img_size, generator=g)


def test_config_roundtrip_and_paper_sizes():
    for c in (InternVideo2Config.tiny(), InternVideo2Config.paper()):
        assert InternVideo2Config(**json.loads(json.dumps(dataclasses.asdict(c)))) == c
    p = InternVideo2Config.paper()
    assert (p.tokens_per_frame, p.embed_dim, p.num_run_blocks) == (256, 1408, 39)
    assert int(p.embed_dim * p.mlp_ratio) == 6144
    with pytest.raises(ConfigError):
        InternVideo2Encoder(dataclasses.replace(p, img_size=225))


def test_paper_parameter_names_and_shapes():
    # names/shapes of the released checkpoint (prefix stripped), checked on the meta device: no memory
    with torch.device("meta"):
        enc = InternVideo2Encoder(InternVideo2Config.paper())
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert shapes["patch_embed.proj.weight"] == (1408, 3, 1, 14, 14)
    assert shapes["cls_token"] == (1, 1, 1408)
    assert shapes["pos_embed"] == (1, 4 * 256 + 1, 1408)
    assert shapes["blocks.0.attn.qkv.weight"] == (3 * 1408, 1408)
    assert "blocks.0.attn.qkv.bias" not in shapes
    assert shapes["blocks.0.attn.q_norm.weight"] == (1408,)
    assert shapes["blocks.38.ls2.gamma"] == (1408,)
    assert shapes["blocks.38.mlp.fc1.weight"] == (6144, 1408)
    assert "blocks.39.norm1.weight" not in shapes  # the last block is never run, never built


def test_forward_shapes(encoder, cfg):
    out = encoder(_pixels(cfg, b=2, t=8))
    assert out.shape == (2, 8, cfg.tokens_per_frame, cfg.embed_dim)
    assert torch.isfinite(out).all()
    with pytest.raises(MaskError):
        encoder(_pixels(cfg, t=6))


def test_chunks_independent_frames_within_chunk_interact(cfg):
    torch.manual_seed(0)
    encoder = InternVideo2Encoder(cfg).eval()
    with torch.no_grad():  # layer scale 1 (init 1e-5 hides every interaction below float tolerance)
        for name, p in encoder.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
    x = _pixels(cfg, t=8)
    with torch.no_grad():
        base = encoder(x)
        y = x.clone()
        y[:, 5] += 1.0  # a frame of chunk 2
        changed = encoder(y)
    torch.testing.assert_close(changed[:, :4], base[:, :4], atol=1e-6, rtol=0)
    # frames 4, 6, 7 share the chunk with frame 5: joint attention changes their tokens too
    for f in (4, 6, 7):
        assert (changed[:, f] - base[:, f]).abs().max() > 1e-3


def test_a_tubelet_of_two_frames_gives_each_of_them_its_tokens(cfg):
    """tubelet_size 2 (from-scratch models): the patch embedding sees frame pairs, the output keeps one grid per
    frame (the pair's), so the adapters and the LLM see the same number of tokens."""
    tub = dataclasses.replace(cfg, tubelet_size=2)
    torch.manual_seed(0)
    encoder = InternVideo2Encoder(tub).eval()
    assert encoder.patch_embed.proj.weight.shape[2] == 2
    assert encoder.pos_embed.shape[1] == 2 * cfg.tokens_per_frame + 1  # a chunk of 4 frames = 2 tubelets
    x = _pixels(cfg, t=8)
    with torch.no_grad():
        out = encoder(x)
        y = x.clone()
        y[:, 3] += 1.0  # the second frame of the second tubelet
        changed = encoder(y)
    assert out.shape == (1, 8, cfg.tokens_per_frame, cfg.embed_dim)
    for a, b in ((0, 1), (2, 3), (4, 5), (6, 7)):
        torch.testing.assert_close(out[:, a], out[:, b])
    assert (changed[:, 2] - out[:, 2]).abs().max() > 1e-3  # frame 3 reaches its tubelet's tokens directly
    torch.testing.assert_close(changed[:, 4:], out[:, 4:])  # and not the other chunk
    with pytest.raises(ConfigError, match="tubelet_size"):
        InternVideo2Encoder(dataclasses.replace(cfg, num_frames=3, tubelet_size=2))


def test_preprocess_frames():
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 30, 50, 3), dtype=np.uint8)
    px = preprocess_frames(frames)
    assert px.shape == (4, 3, 224, 224) and px.dtype == torch.float32
    white = preprocess_frames(np.full((1, 10, 10, 3), 255, np.uint8), size=56)
    torch.testing.assert_close(white[0, :, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))
    with pytest.raises(MaskError):
        preprocess_frames(frames.astype(np.float32))


def _release_like_state(cfg, seed=1):
    """A checkpoint laid out like the release: vision_encoder.* (incl. one more block and heads) + others."""
    torch.manual_seed(seed)
    src = InternVideo2Encoder(cfg)
    d = cfg.embed_dim
    state = {"vision_encoder." + k: v.clone() for k, v in src.state_dict().items()}
    extras = {
        f"vision_encoder.blocks.{cfg.depth - 1}.norm1.weight": torch.ones(d),
        "vision_encoder.img_pos_embed": torch.zeros(1, cfg.tokens_per_frame + 1, d),
        "vision_encoder.clip_pos_embed": torch.zeros(1, cfg.num_frames * cfg.tokens_per_frame + 1, d),
        "vision_encoder.clip_projector.cross_attn.q.weight": torch.zeros(d, d),
        "vision_encoder.clip_projector.norm1_q.weight": torch.ones(d),
        "vision_encoder.final_clip_decoder.head.weight": torch.zeros(8, d),
        "vision_proj.weight": torch.zeros(8, d),
        "text_encoder.bert.embeddings.word_embeddings.weight": torch.zeros(10, 8),
    }
    state.update(extras)
    return src, state, sorted(extras)


def test_checkpoint_loads_every_tensor(tmp_path, encoder, cfg):
    src, state, extras = _release_like_state(cfg)
    path = tmp_path / "iv2.pt"
    torch.save({"module": state}, path)  # DeepSpeed-style wrapper
    torch.manual_seed(99)
    dst = InternVideo2Encoder(cfg).eval()
    report = load_internvideo2_checkpoint(dst, str(path))
    assert report.unused == extras
    assert sorted(report.loaded) == sorted(dst.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    x = _pixels(cfg, t=4)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src.eval()(x))
    # a state dict already stripped of the prefix loads too
    stripped = {k[len("vision_encoder.") :]: v for k, v in state.items() if k.startswith("vision_encoder.")}
    assert load_internvideo2_checkpoint(InternVideo2Encoder(cfg), stripped).unused == sorted(
        k[len("vision_encoder.") :] for k in extras if k.startswith("vision_encoder.")
    )


def test_checkpoint_missing_key_and_wrong_shape(tmp_path, cfg):
    _, state, _ = _release_like_state(cfg)
    missing = dict(state)
    del missing["vision_encoder.blocks.0.attn.q_norm.weight"]
    with pytest.raises(MissingWeightsError, match="blocks.0.attn.q_norm.weight"):
        load_internvideo2_checkpoint(InternVideo2Encoder(cfg), missing)
    wrong = dict(state)
    wrong["vision_encoder.pos_embed"] = torch.zeros(1, 8 * cfg.tokens_per_frame + 1, cfg.embed_dim)
    with pytest.raises(ConfigError, match="vision_encoder.pos_embed"):
        load_internvideo2_checkpoint(InternVideo2Encoder(cfg), wrong)
    with pytest.raises(MissingWeightsError):
        load_internvideo2_checkpoint(InternVideo2Encoder(cfg), str(tmp_path / "nope.pt"))


def test_gradients_flow(cfg):
    enc = InternVideo2Encoder(cfg)
    x = _pixels(cfg, t=4).requires_grad_(True)
    enc(x).square().mean().backward()
    assert x.grad.abs().sum() > 0
    assert enc.blocks[0].attn.q_norm.weight.grad is not None
