"""vglamm convert released: a release-style VideoGLaMM folder (reference key names, .bin shards + index, config.json
with seg_token_idx, tokenizer) built from our tiny model, converted back, compared tensor by tensor and end to end."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from vglamm.cli import main as cli_main
from vglamm.conversion import convert_released, load_sharded, to_reference_state_dict
from vglamm.errors import ConfigError, MissingWeightsError
from vglamm.modeling.configuration import AdapterConfig
from vglamm.modeling.pixel_decoder import PixelDecoderConfig
from vglamm.modeling import VideoGLaMM, VideoGLaMMConfig

EXTRAS = {  # present in the release, unused by our model
    "model.vision_tower.vision_proj.weight": torch.randn(8, 64),
    "model.vision_tower.vision_proj.bias": torch.randn(8),
    "model.vision_tower.vision_encoder.blocks.1.attn.qkv.weight": torch.randn(192, 64),  # the last block
    "model.vision_tower.vision_encoder.clip_projector.norm1_q.weight": torch.randn(64),
}


def _force_seg(model: VideoGLaMM) -> None:
    """Make every generated token [SEG] (a deterministic grounded answer for the end-to-end comparison):
    residual dimension 0 is 1 at every position and only it survives the final norm, where only [SEG] reads it."""
    lm = model.language_model.model
    with torch.no_grad():
        lm.model.embed_tokens.weight[:, 0] = 1.0
        for layer in lm.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        for adapter in (model.image_adapter, model.video_adapter):
            adapter.proj[2].weight[0] = 0.0
            adapter.proj[2].bias[0] = 1.0
        lm.model.norm.weight.zero_()
        lm.model.norm.weight[0] = 1.0
        lm.lm_head.weight.zero_()
        lm.lm_head.weight[model.seg_token_id, 0] = 5.0


def write_release(directory, state, model, *, fmt="bin", seg_idx=None):
    """The release layout: 2 shards + index, config.json (VideoGPT+ Phi-3 config + VideoGLaMM fields), tokenizer."""
    os.makedirs(directory)
    keys = sorted(state)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves, 1):
        if fmt == "bin":
            name = f"pytorch_model-{i:05d}-of-00002.bin"
            torch.save({k: state[k].clone() for k in part}, os.path.join(directory, name))
        else:
            from safetensors.torch import save_file

            name = f"model-{i:05d}-of-00002.safetensors"
            save_file({k: state[k].contiguous().clone() for k in part}, os.path.join(directory, name))
        weight_map.update({k: name for k in part})
    index = "pytorch_model.bin.index.json" if fmt == "bin" else "model.safetensors.index.json"
    with open(os.path.join(directory, index), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    llm = model.language_model.model.config.to_dict()  # what transformers wrote for the Phi-3 part
    rope = llm.pop("rope_parameters", {}) or {}
    config = {k: v for k, v in llm.items() if k not in ("model_type", "architectures", "transformers_version")}
    config.update(model_type="VideoGPT+", architectures=["VideoGLaMMForCausalLM"], rope_theta=rope.get("rope_theta"),
                  seg_token_idx=model.seg_token_id if seg_idx is None else seg_idx,
                  mm_vision_tower="/weights/InternVideo2-stage2_1b-224p-f4.pt",
                  image_mm_vision_tower="openai/clip-vit-large-patch14-336", mm_projector_type="mlp2x_gelu",
                  image_mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, use_sam2=True, out_dim=256,
                  train_mask_decoder=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    model.tokenizer.save_pretrained(directory)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    torch.manual_seed(0)
    # A release always carries one of Meta's SAM2 variants (Hiera-L in the paper); tiny's nano SAM2 is ours only.
    model = VideoGLaMM.from_config(VideoGLaMMConfig.tiny(pixel_decoder=PixelDecoderConfig.tiny(),
                                                         adapters=AdapterConfig(image_pool=4, video_pool=2)))
    model.language_model.merge_lora()  # the release holds merged weights
    _force_seg(model)
    model.eval()
    root = tmp_path_factory.mktemp("release")
    clip_dir = root / "clip"
    model.image_encoder.model.save_pretrained(clip_dir)  # CLIP is not in the release: its own checkpoint
    state = {**to_reference_state_dict(model), **EXTRAS}
    write_release(root / "videoglamm", state, model)
    return model, root, state


@pytest.fixture(scope="module")
def converted(release):
    model, root, _ = release
    report = convert_released(root / "videoglamm", clip=root / "clip", out=root / "out", preset="tiny")
    return report, VideoGLaMM.from_pretrained(root / "out", device="cpu")


def test_reference_key_names(release):
    _, _, state = release
    prefixes = {k.split(".")[0] if k.startswith("lm_head") else ".".join(k.split(".")[:2]) for k in state}
    assert prefixes == {"lm_head", "model.embed_tokens", "model.layers", "model.norm", "model.mm_projector",
                        "model.image_mm_projector", "model.vision_tower", "model.visual_model",
                        "model.text_hidden_fcs"}
    assert "model.text_hidden_fcs.0.2.bias" in state and "model.visual_model.sam_mask_decoder.iou_token.weight" in state


def test_every_tensor_arrives(release, converted):
    model, _, state = release
    report, conv = converted
    ours, theirs = conv.state_dict(), model.state_dict()
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    assert report.loaded["videoglamm"] == len(state) - len(EXTRAS)
    assert sorted(report.unused["videoglamm"]) == sorted(EXTRAS)
    assert report.loaded["clip"] == len(model.image_encoder.model.state_dict())


def test_seg_token_carried_over(release, converted):
    from transformers import AutoTokenizer

    model, root, _ = release
    _, conv = converted
    tok = AutoTokenizer.from_pretrained(root / "out")
    assert conv.seg_token_id == model.seg_token_id == tok.convert_tokens_to_ids("[SEG]")
    assert conv.language_model.embed_tokens.num_embeddings == len(tok)
    assert not conv.cfg.language_model.use_lora
    assert conv.cfg.pixel_decoder.sam2_config == "configs/sam2.1/sam2.1_hiera_t.yaml"
    saved = json.loads((root / "out" / "conversion_report.json").read_text())
    assert saved["kind"] == "released"


def test_converted_model_chats_and_segments_like_the_source(release, converted):
    model, _, _ = release
    _, conv = converted
    frames = np.random.default_rng(0).integers(0, 255, size=(5, 40, 48, 3), dtype=np.uint8)
    a, b = model.chat(frames, "Describe the video.", max_new_tokens=2), conv.chat(frames, "Describe the video.",
                                                                                     max_new_tokens=2)
    assert a.raw_text == b.raw_text and len(b.objects) == 2
    for x, y in zip(a.objects, b.objects):
        assert y.masks.shape == (5, 40, 48) and np.array_equal(x.masks, y.masks)
    seg = conv.segment(frames, "the red car", max_new_tokens=1)
    assert seg.shape == (5, 40, 48) and seg.dtype == bool
    assert np.array_equal(seg, model.segment(frames, "the red car", max_new_tokens=1))


def _variant(release, tmp_path, edit=None, **kwargs):
    model, root, state = release
    state = dict(state)
    if edit:
        edit(state)
    src = tmp_path / "src"
    write_release(src, state, model, **kwargs)
    return src, root / "clip"


def _assert_nothing_written(tmp_path):
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no staging folder left behind


def test_missing_key_names_it_and_writes_nothing(release, tmp_path):
    src, clip = _variant(release, tmp_path, lambda s: s.pop("model.visual_model.sam_mask_decoder.iou_token.weight"))
    with pytest.raises(MissingWeightsError, match=r"model\.visual_model\.sam_mask_decoder\.iou_token\.weight"):
        convert_released(src, clip=clip, out=tmp_path / "out", preset="tiny")
    _assert_nothing_written(tmp_path)


def test_wrong_shape_names_the_key(release, tmp_path):
    def edit(s):
        s["model.mm_projector.2.weight"] = torch.zeros(64, 32)

    src, clip = _variant(release, tmp_path, edit)
    with pytest.raises(ConfigError, match=r"model\.mm_projector\.2\.weight.*\(64, 32\)"):
        convert_released(src, clip=clip, out=tmp_path / "out", preset="tiny")
    _assert_nothing_written(tmp_path)


def test_unmapped_key_is_an_error(release, tmp_path):
    src, clip = _variant(release, tmp_path, lambda s: s.update({"model.visual_model.extra_head.weight": torch.ones(2)}))
    with pytest.raises(ConfigError, match=r"model\.visual_model\.extra_head\.weight"):
        convert_released(src, clip=clip, out=tmp_path / "out", preset="tiny")
    _assert_nothing_written(tmp_path)


def test_seg_token_mismatch_and_missing_shard(release, tmp_path):
    src, clip = _variant(release, tmp_path, seg_idx=3)
    with pytest.raises(ConfigError, match="seg_token_idx=3"):
        convert_released(src, clip=clip, out=tmp_path / "out", preset="tiny")
    os.remove(src / "pytorch_model-00002-of-00002.bin")
    with pytest.raises(MissingWeightsError, match="pytorch_model-00002-of-00002.bin"):
        load_sharded(src)
    _assert_nothing_written(tmp_path)


def test_cli_with_safetensors_shards(release, tmp_path, capsys):
    model, _, _ = release
    src, clip = _variant(release, tmp_path, fmt="safetensors")
    out = tmp_path / "out"
    rc = cli_main(["convert", "released", str(src), "--clip", str(clip), "--out", str(out), "--preset", "tiny"])
    assert rc == 0 and "4 unused" in capsys.readouterr().out
    conv = VideoGLaMM.from_pretrained(out, device="cpu")
    assert torch.equal(conv.seg_adapter.proj[2].weight, model.seg_adapter.proj[2].weight)
    # refuses to overwrite without --overwrite, and to write into its input
    assert cli_main(["convert", "released", str(src), "--clip", str(clip), "--out", str(out), "--preset", "tiny"]) == 2
    assert cli_main(["convert", "released", str(src), "--clip", str(clip), "--out", str(src / "x"),
                     "--preset", "tiny"]) == 2
    shutil.rmtree(out)
