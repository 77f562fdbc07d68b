import dataclasses
import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vglamm.errors import ConfigError, MaskError, MissingWeightsError
from vglamm.modeling.conv_trunk import ConvTrunk
from vglamm.modeling.pixel_decoder import FrameFeatures, PixelDecoderConfig, SAM2PixelDecoder, remove_small_regions

T, N, H, W = 5, 3, 36, 52


@pytest.fixture(scope="module")
def decoder():
    torch.manual_seed(0)
    return SAM2PixelDecoder(PixelDecoderConfig.tiny()).eval()


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def prompts():
    return torch.randn(N, 256, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def features(decoder, frames):
    with torch.no_grad():
        return decoder.encode_frames(decoder.preprocess(frames))


def test_config_roundtrip():
    for cfg in (PixelDecoderConfig.tiny(), PixelDecoderConfig.paper()):
        d = dataclasses.asdict(cfg)
        assert PixelDecoderConfig(**json.loads(json.dumps(d))) == cfg
    with pytest.raises(ConfigError):
        SAM2PixelDecoder(PixelDecoderConfig(prompt_dim=128))


def test_preprocess_and_features(decoder, frames, features):
    px = decoder.preprocess(frames)
    assert px.shape == (T, 3, 128, 128) and px.dtype == torch.float32
    assert decoder.preprocess(torch.from_numpy(frames)).allclose(px)
    with pytest.raises(MaskError):
        decoder.preprocess(frames.astype(np.float32))
    assert isinstance(features, FrameFeatures) and features.num_frames == T
    assert features.image_embed.shape == (T, 256, 8, 8)


@pytest.mark.parametrize("mode", ["framewise", "temporal"])
def test_shapes_and_objects_independent(decoder, features, prompts, mode):
    with torch.no_grad():
        batched = decoder.decode(features, prompts, mode=mode)
        alone = torch.cat([decoder.decode(features, prompts[i : i + 1], mode=mode) for i in range(N)])
    assert batched.shape == (N, T, 32, 32)
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)


def test_modes_differ_after_first_frame(decoder, features, prompts):
    with torch.no_grad():
        fw = decoder.decode(features, prompts, mode="framewise")
        tp = decoder.decode(features, prompts, mode="temporal")
    # frame 0 has no memory in both modes: identical; later frames read memory in temporal mode
    torch.testing.assert_close(fw[:, 0], tp[:, 0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fw[:, 1:], tp[:, 1:], atol=1e-3)


def test_bad_mode_and_prompts(decoder, features, prompts):
    with pytest.raises(ConfigError):
        decoder.decode(features, prompts, mode="nope")
    with pytest.raises(MaskError):
        decoder.decode(features, prompts[:, :100])


@pytest.mark.parametrize("mode", ["framewise", "temporal"])
def test_gradients_reach_prompts_and_mask_decoder(decoder, features, prompts, mode):
    decoder.zero_grad()
    p = prompts.clone().requires_grad_(True)
    feats = FrameFeatures(features.image_embed[:3], [x[:3] for x in features.high_res], features.pos_embed[:3])
    logits = decoder.decode(feats, p, mode=mode)
    target = torch.zeros_like(logits)
    target[..., 8:24, 8:24] = 1
    F.binary_cross_entropy_with_logits(logits, target).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    # every object's prompt receives gradient from its own masks
    assert (p.grad.abs().sum(1) > 0).all()
    mdec = decoder.sam.sam_mask_decoder
    assert mdec.output_hypernetworks_mlps[0].layers[0].weight.grad.abs().sum() > 0
    assert mdec.transformer.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    if mode == "temporal":
        # frames after the first read memory: the memory encoder takes part in the graph
        assert decoder.sam.memory_encoder.pix_feat_proj.weight.grad.abs().sum() > 0
    decoder.zero_grad()


@pytest.mark.parametrize("mode", ["framewise", "temporal"])
def test_predict_video_streams_like_decode(decoder, frames, features, prompts, mode):
    with torch.no_grad():
        logits = decoder.decode(features, prompts, mode=mode)
    expected = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False) > 0
    streamed = decoder.predict_video(iter(list(frames)), prompts, (H, W), mode=mode, chunk=2)
    assert streamed.shape == (N, T, H, W) and streamed.dtype == torch.bool
    assert torch.equal(streamed, expected)
    whole = decoder.predict_video(frames, prompts, (H, W), mode=mode, chunk=8)
    assert torch.equal(whole, expected)


def test_remove_small_regions_fills_holes_and_clears_specks():
    scores = torch.full((1, 2, 16, 16), -3.0)
    scores[0, 0, 2:10, 2:10] = 2.0  # a 64-pixel object ...
    scores[0, 0, 5:7, 5:7] = -1.0  # ... with a 4-pixel hole
    scores[0, 0, 13:15, 12:15] = 1.5  # a 6-pixel speck
    scores[0, 1] = scores[0, 0].flip(-1)
    cleaned = remove_small_regions(scores, max_hole_area=4, max_sprinkle_area=6)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[2:10, 2:10] = True
    assert torch.equal(cleaned[0, 0] > 0, expected) and torch.equal(cleaned[0, 1] > 0, expected.flip(-1))
    untouched = (scores > 0) == (cleaned > 0)
    assert torch.equal(cleaned[untouched], scores[untouched])  # scores change only where a region flips
    smaller = remove_small_regions(scores, max_hole_area=3, max_sprinkle_area=5)
    assert torch.equal(smaller, scores)  # each region is one pixel over its limit
    assert remove_small_regions(scores, 0, 0) is scores
    with pytest.raises(ConfigError):
        PixelDecoderConfig(max_hole_area=-1).validate()


def test_predict_video_cleans_masks_as_configured(frames, prompts):
    torch.manual_seed(0)
    plain = SAM2PixelDecoder(PixelDecoderConfig.tiny()).eval()
    raw = plain.predict_video(frames, prompts, (H, W), mode="framewise")
    assert raw.any()
    torch.manual_seed(0)
    cfg = dataclasses.replace(PixelDecoderConfig.tiny(), max_sprinkle_area=32 * 32)  # every region is a speck
    cleaning = SAM2PixelDecoder(cfg).eval()
    assert not cleaning.predict_video(frames, prompts, (H, W), mode="framewise").any()


def test_temporal_memory_is_bounded(decoder, prompts):
    frames = np.random.default_rng(3).integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    state = decoder._new_temporal_state()
    with torch.no_grad():
        feats = decoder.encode_frames(decoder.preprocess(frames))
        for t in range(20):
            decoder._temporal_step(state, feats.frame(t), prompts, t)
    non_cond = state.output_dict["non_cond_frame_outputs"]
    with_mem = [k for k, v in non_cond.items() if v["maskmem_features"] is not None]
    assert len(state.output_dict["cond_frame_outputs"]) == 1
    assert len(with_mem) == decoder.sam.num_maskmem - 1
    assert len(non_cond) == decoder.sam.max_obj_ptrs_in_encoder - 1


def test_checkpoint_roundtrip(tmp_path, decoder, features, prompts):
    path = tmp_path / "sam2_tiny.pt"
    torch.save({"model": decoder.sam.state_dict()}, path)
    torch.manual_seed(123)  # different random init, then overwritten by the checkpoint
    cfg = dataclasses.replace(PixelDecoderConfig.tiny(), ckpt_path=str(path))
    loaded = SAM2PixelDecoder(cfg).eval()
    with torch.no_grad():
        for mode in ("framewise", "temporal"):
            torch.testing.assert_close(loaded.decode(features, prompts, mode), decoder.decode(features, prompts, mode))


def test_checkpoint_errors(tmp_path, decoder):
    sd = decoder.sam.state_dict()
    missing = {k: v for k, v in sd.items() if k != "no_mem_embed"}
    torch.save({"model": missing}, tmp_path / "missing.pt")
    bad = dict(sd)
    bad["no_mem_embed"] = torch.zeros(1, 1, 7)
    torch.save({"model": bad}, tmp_path / "bad.pt")
    base = PixelDecoderConfig.tiny()
    with pytest.raises(MissingWeightsError, match="no_mem_embed"):
        SAM2PixelDecoder(dataclasses.replace(base, ckpt_path=str(tmp_path / "missing.pt")))
    with pytest.raises(ConfigError, match="no_mem_embed"):
        SAM2PixelDecoder(dataclasses.replace(base, ckpt_path=str(tmp_path / "bad.pt")))
    with pytest.raises(MissingWeightsError):
        SAM2PixelDecoder(dataclasses.replace(base, ckpt_path=str(tmp_path / "absent.pt")))


def test_report_cpu_time_per_frame(decoder, prompts):
    """Prints timings for the report; asserts nothing about them."""
    frames = np.random.default_rng(4).integers(0, 256, size=(8, 240, 320, 3), dtype=np.uint8)
    for mode in ("framewise", "temporal"):
        t0 = time.perf_counter()
        decoder.predict_video(frames, prompts[:1], (240, 320), mode=mode)
        dt = (time.perf_counter() - t0) / len(frames)
        print(f"\n[pixel_decoder tiny 128px] predict_video {mode}: {dt * 1000:.1f} ms/frame (1 object)")


# ---------------------------------------------------------------- nano(): the same SAM2 architecture, ~1 M params
@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return SAM2PixelDecoder(PixelDecoderConfig.nano()).eval()


@pytest.fixture(scope="module")
def nano_prompts(nano):
    return torch.randn(N, nano.cfg.prompt_dim, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def nano_features(nano, frames):
    with torch.no_grad():
        return nano.encode_frames(nano.preprocess(frames))


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


def test_nano_config_and_architecture(nano, nano_features):
    cfg = PixelDecoderConfig.nano()
    assert PixelDecoderConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    assert cfg.prompt_dim == cfg.model_width() == nano.sam.hidden_dim == 64
    assert PixelDecoderConfig.tiny().model_width() == 256
    sam = nano.sam
    # every SAM2 part is there, only narrower / shallower; the image trunk is the conv one by default
    assert isinstance(sam.image_encoder.trunk, ConvTrunk) and sam.image_encoder.trunk.channel_list == [128, 64, 32, 16]
    assert sam.mem_dim == 32 and len(sam.memory_attention.layers) == 1
    assert sam.use_high_res_features_in_sam and sam.use_obj_ptrs_in_encoder and sam.num_maskmem == 7
    assert 500_000 <= _num_params(nano) <= 3_000_000
    assert nano_features.image_embed.shape == (T, 64, 8, 8) and nano_features.pos_embed.shape == (T, 64, 8, 8)
    assert [tuple(x.shape) for x in nano_features.high_res] == [(T, 8, 32, 32), (T, 16, 16, 16)]


def test_nano_prompt_dim_must_match_width():
    with pytest.raises(ConfigError, match="prompt_dim=64"):
        dataclasses.replace(PixelDecoderConfig.tiny(), prompt_dim=64).validate()
    with pytest.raises(ConfigError, match="set prompt_dim=64"):
        SAM2PixelDecoder(dataclasses.replace(PixelDecoderConfig.nano(), prompt_dim=256))
    with pytest.raises(ConfigError):
        PixelDecoderConfig.nano(image_size=48)
    with pytest.raises(ConfigError):  # a typo in an override is a ConfigError, not a Hydra exception
        PixelDecoderConfig(hydra_overrides=["model.no_such_key=1"]).validate()


def test_conv_trunk_keeps_the_sam2_trunk_contract():
    trunk = ConvTrunk((8, 16, 32, 64))
    maps = trunk(torch.zeros(2, 3, 96, 128))
    assert [tuple(m.shape) for m in maps] == [(2, 8, 24, 32), (2, 16, 12, 16), (2, 32, 6, 8), (2, 64, 3, 4)]
    assert trunk.channel_list == [64, 32, 16, 8]
    with pytest.raises(ValueError):
        ConvTrunk((8, 16, 32))


def test_nano_hiera_trunk_still_builds_and_bad_trunk_is_a_config_error():
    dec = SAM2PixelDecoder(PixelDecoderConfig.nano(trunk="hiera")).eval()
    assert len(dec.sam.image_encoder.trunk.blocks) == 5 and dec.sam.image_encoder.trunk.channel_list == [128, 64, 32, 16]
    with torch.no_grad():
        out = dec.decode(dec.encode_frames(torch.zeros(2, 3, 128, 128)), torch.zeros(1, 64))
    assert out.shape == (1, 2, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="trunk"):
        PixelDecoderConfig.nano(trunk="resnet")


def test_nano_64px_builds():
    dec = SAM2PixelDecoder(PixelDecoderConfig.nano(image_size=64)).eval()
    with torch.no_grad():
        feats = dec.encode_frames(torch.zeros(2, 3, 64, 64))
        out = dec.decode(feats, torch.zeros(1, 64), mode="temporal")
    assert out.shape == (1, 2, 16, 16)


@pytest.mark.parametrize("mode", ["framewise", "temporal"])
def test_nano_batched_equals_one_by_one(nano, nano_features, nano_prompts, mode):
    with torch.no_grad():
        batched = nano.decode(nano_features, nano_prompts, mode=mode)
        alone = torch.cat([nano.decode(nano_features, nano_prompts[i : i + 1], mode=mode) for i in range(N)])
        fw = nano.decode(nano_features, nano_prompts, mode="framewise")
    assert batched.shape == (N, T, 32, 32) and torch.isfinite(batched).all()
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batched[:, 0], fw[:, 0], atol=1e-4, rtol=1e-4)  # frame 0 has no memory


@pytest.mark.parametrize("mode", ["framewise", "temporal"])
def test_nano_gradients_reach_every_part(nano, frames, nano_prompts, mode):
    nano.zero_grad()
    p = nano_prompts.clone().requires_grad_(True)
    logits = nano.decode(nano.encode_frames(nano.preprocess(frames[:3])), p, mode=mode)
    target = torch.zeros_like(logits)
    target[..., 8:24, 8:24] = 1
    F.binary_cross_entropy_with_logits(logits, target).backward()
    assert (p.grad.abs().sum(1) > 0).all()
    sam = nano.sam

    def has_grad(m):
        return any(q.grad is not None and q.grad.abs().sum() > 0 for q in m.parameters())

    assert has_grad(sam.image_encoder.trunk) and has_grad(sam.image_encoder.neck)
    assert has_grad(sam.sam_mask_decoder.conv_s0) and has_grad(sam.sam_mask_decoder.conv_s1)
    assert has_grad(sam.sam_mask_decoder.transformer)
    if mode == "temporal":
        assert has_grad(sam.memory_attention) and has_grad(sam.memory_encoder)
        # object pointers take part: through obj_ptr_proj where the object-score head says "present",
        # through the learned no_obj_ptr where it says "absent" (random init: either may happen)
        assert has_grad(sam.obj_ptr_proj) or sam.no_obj_ptr.grad.abs().sum() > 0
    nano.zero_grad()


@pytest.mark.parametrize("mode", ["framewise", "temporal"])
def test_nano_predict_video_streams_like_decode(nano, frames, nano_features, nano_prompts, mode):
    with torch.no_grad():
        logits = nano.decode(nano_features, nano_prompts, mode=mode)
    expected = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False) > 0
    streamed = nano.predict_video(iter(list(frames)), nano_prompts, (H, W), mode=mode, chunk=2)
    assert torch.equal(streamed, expected)


@pytest.mark.parametrize("mode", ["framewise", "temporal"])
def test_decode_many_equals_each_clip_alone(nano, frames, nano_prompts, mode):
    """Clips of several lengths and object counts (none too): batched propagation changes no clip's logits."""
    clips = [frames, frames[::-1].copy(), frames[:3], frames[1:4]]
    with torch.no_grad():
        feats = [nano.encode_frames(nano.preprocess(c)) for c in clips]
        prompts = [nano_prompts, nano_prompts[1:], nano_prompts[:0], nano_prompts[:2]]
        many = nano.decode_many(feats, prompts, mode=mode)
        for f, p, got in zip(feats, prompts, many):
            alone = nano.decode(f, p, mode=mode)
            assert got.shape == alone.shape == (len(p), f.num_frames, 32, 32)
            assert torch.allclose(got, alone, atol=1e-4)
    with pytest.raises(ConfigError):
        nano.decode_many(feats, prompts[:2], mode=mode)


def test_report_tiny_vs_nano_train_step(decoder, nano):
    """Prints parameter counts and CPU forward+backward time per 4-frame clip; asserts nothing about them."""
    pixels = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    for name, dec, reps in (("tiny", decoder, 1), ("nano", nano, 3)):
        p = torch.randn(2, dec.cfg.prompt_dim, requires_grad=True)
        for mode in ("framewise", "temporal"):
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                logits = dec.decode(dec.encode_frames(pixels), p, mode=mode)
                F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits)).backward()
                best = min(best, time.perf_counter() - t0)
            dec.zero_grad()
            print(f"\n[pixel_decoder {name}: {_num_params(dec) / 1e6:.2f} M params] fwd+bwd, 4 frames x 2 objects, "
                  f"{mode}: {best * 1000:.0f} ms")


def test_two_prompts_learn_two_different_objects():
    """The prompt must condition the mask: with unit-scale prompts (what SegAdapter starts from) SAM2 learns to
    give each of two objects its own mask, not the union of both for every prompt."""
    import torch.nn.functional as F

    from vglamm.modeling.adapters import SegAdapter

    torch.manual_seed(0)
    dec = SAM2PixelDecoder(PixelDecoderConfig.nano())
    frames = np.full((2, 32, 32, 3), 30, np.uint8)
    masks = np.zeros((2, 2, 32, 32), bool)
    frames[:, 4:14, 4:14], masks[0, :, 4:14, 4:14] = (220, 30, 30), True
    frames[:, 18:28, 16:26], masks[1, :, 18:28, 16:26] = (30, 30, 220), True
    target = F.interpolate(torch.as_tensor(masks).float(), size=(32, 32), mode="nearest")
    adapter = SegAdapter(32, dec.cfg.prompt_dim)
    hidden = torch.nn.Parameter(torch.randn(2, 32))
    assert 0.5 < adapter(hidden).std().item() < 2.0  # SAM2's point embeddings are of this scale
    params = list(dec.parameters()) + list(adapter.parameters()) + [hidden]
    opt = torch.optim.AdamW(params, lr=3e-3)
    pixels = dec.preprocess(frames)
    for _ in range(100):
        logits = dec.decode(dec.encode_frames(pixels), adapter(hidden), mode="framewise")
        loss = F.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred, gt = logits.detach() > 0, target > 0.5
    iou = lambda a, b: ((a & b).sum() / (a | b).sum().clamp(min=1)).item()
    assert iou(pred[0], gt[0]) > 0.9 and iou(pred[1], gt[1]) > 0.9
    assert iou(pred[0], gt[1]) < 0.1 and iou(pred[1], gt[0]) < 0.1


@pytest.fixture(scope="module")
def located():
    """A nano decoder with the location prompt, its vector set (it starts at zero, as training starts it)."""
    torch.manual_seed(0)
    dec = SAM2PixelDecoder(dataclasses.replace(PixelDecoderConfig.nano(), location_prompt=True)).eval()
    with torch.no_grad():
        dec.location_embed.normal_(generator=torch.Generator().manual_seed(3))
    return dec


def _maps(n, t, seed=4):
    return torch.randn(n, t, 4, 4, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["framewise", "temporal"])
def test_location_prompt_starts_as_none_and_then_steers_the_masks(located, frames, nano_prompts, mode):
    with torch.no_grad():
        feats = located.encode_frames(located.preprocess(frames))
        plain = located.decode(feats, nano_prompts, mode=mode)
        steered = located.decode(feats, nano_prompts, mode=mode, locations=_maps(N, T))
        assert (steered - plain).abs().max() > 1e-2
        # a map that is zero everywhere is no location, and the vector at its zero start ignores every map
        torch.testing.assert_close(located.decode(feats, nano_prompts, mode=mode, locations=torch.zeros(N, T, 4, 4)),
                                   plain)
        vector = located.location_embed.clone()
        located.location_embed.zero_()
        try:
            torch.testing.assert_close(located.decode(feats, nano_prompts, mode=mode, locations=_maps(N, T)), plain)
        finally:
            located.location_embed.copy_(vector)


@pytest.mark.parametrize("mode", ["framewise", "temporal"])
def test_location_maps_follow_their_object_and_frame(located, frames, nano_prompts, mode):
    """decode_many with maps equals each clip alone; streaming picks each frame's map by location_frames."""
    clips = [frames, frames[:3], frames[1:4]]
    with torch.no_grad():
        feats = [located.encode_frames(located.preprocess(c)) for c in clips]
        prompts = [nano_prompts, nano_prompts[:2], nano_prompts[1:]]
        maps = [_maps(len(p), f.num_frames, seed=i) for i, (p, f) in enumerate(zip(prompts, feats))]
        many = located.decode_many(feats, prompts, mode=mode, locations=maps)
        for f, p, m, got in zip(feats, prompts, maps, many):
            torch.testing.assert_close(got, located.decode(f, p, mode=mode, locations=m), atol=1e-4, rtol=1e-4)
        # 2 maps per object for the 5 frames: frames 0-1 read map 0, frames 2-4 map 1
        two = _maps(N, 2, seed=9)
        which = [0, 0, 1, 1, 1]
        logits = located.decode(feats[0], nano_prompts, mode=mode, locations=two[:, which])
    expected = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False) > 0
    streamed = located.predict_video(iter(list(frames)), nano_prompts, (H, W), mode=mode, chunk=2,
                                     locations=two, location_frames=which)
    assert torch.equal(streamed, expected)


def test_location_prompt_trains_and_bad_maps_are_typed_errors(located, nano, frames, nano_prompts):
    feats = located.encode_frames(located.preprocess(frames[:3]))
    maps = _maps(N, 3).requires_grad_(True)
    located.zero_grad()
    located.decode(feats, nano_prompts, mode="temporal", locations=maps).sigmoid().mean().backward()
    assert located.location_embed.grad.abs().sum() > 0 and maps.grad.abs().sum() > 0
    located.zero_grad()
    with pytest.raises(MaskError, match="locations must be"):
        located.decode(feats, nano_prompts, locations=_maps(N, 2))
    with pytest.raises(ConfigError, match="location_prompt"):  # a decoder trained without them cannot read maps
        nano.decode(nano.encode_frames(nano.preprocess(frames[:3])), nano_prompts, locations=_maps(N, 3))
    with pytest.raises(ConfigError, match="location_frames"):
        located.predict_video(frames, nano_prompts, (H, W), locations=_maps(N, 2))
    with pytest.raises(ConfigError, match="location_frames"):
        located.predict_video(frames, nano_prompts, (H, W), locations=_maps(N, 2), location_frames=[0, 1])
    assert "location_embed" not in dict(nano.named_parameters())
