"""vglamm convert components: tiny checkpoints in each source format (CLIP and Phi-3 via transformers save_pretrained,
a peft LoRA + VideoGPT+ non_lora_trainables, InternVideo2 .pt with its real names and extras, SAM2 in Meta's
{"model": sd} layout), assembled, then compared with the source modules."""

import dataclasses

import pytest
import torch

from vglamm.conversion import convert_components, detect_sam2_config
from vglamm.errors import ConfigError, MissingWeightsError
from vglamm.modeling import VideoGLaMM, VideoGLaMMConfig
from vglamm.modeling.language_model import train_tiny_tokenizer
from vglamm.modeling.video_encoder import InternVideo2Encoder

SAM2_CFG = "configs/sam2.1/sam2.1_hiera_t.yaml"
IV2_EXTRAS = ["vision_encoder.img_pos_embed", "vision_encoder.clip_projector.norm1_q.weight", "vision_proj.weight",
              "text_encoder.embeddings.word_embeddings.weight", "temp"]


def _build_sam2(ckpt=None):
    from sam2.build_sam import build_sam2

    return build_sam2(SAM2_CFG, ckpt_path=ckpt, device="cpu", mode="eval",
                      hydra_overrides_extra=["++model.image_size=128"])


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPConfig, CLIPModel, Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("components")
    tiny = VideoGLaMMConfig.tiny()
    # CLIP: a full CLIPModel folder, like openai/clip-vit-large-patch14-336 (its text side goes unused)
    clip = CLIPModel(CLIPConfig(text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=32,
                                                 num_hidden_layers=1, num_attention_heads=2),
                                vision_config=tiny.image_encoder.vision_config, projection_dim=16)).eval()
    clip.save_pretrained(root / "clip")
    # Phi-3 with a padded vocabulary (520 rows for 512 tokens), as microsoft/Phi-3-mini-4k-instruct (32064 / 32011)
    tok = train_tiny_tokenizer()
    llm = Phi3ForCausalLM(Phi3Config(vocab_size=520, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=4, pad_token_id=tok.pad_token_id,
                                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                     tie_word_embeddings=False)).eval()
    llm.save_pretrained(root / "phi3")
    tok.save_pretrained(root / "phi3")
    # VideoGPT+-style LoRA folder (non-zero B so the merge matters) + its projectors in non_lora_trainables.bin
    peft_llm = get_peft_model(Phi3ForCausalLM.from_pretrained(root / "phi3"),
                              LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj"], init_lora_weights=False))
    peft_llm.save_pretrained(root / "lora")
    projectors = {"base_model.model.model.mm_projector.0.weight": torch.randn(64, 64),
                  "base_model.model.model.mm_projector.0.bias": torch.randn(64),
                  "base_model.model.model.mm_projector.2.weight": torch.randn(64, 64),
                  "base_model.model.model.mm_projector.2.bias": torch.randn(64),
                  "base_model.model.model.image_mm_projector.0.weight": torch.randn(64, 32),
                  "base_model.model.model.image_mm_projector.0.bias": torch.randn(64),
                  "base_model.model.model.image_mm_projector.2.weight": torch.randn(64, 64),
                  "base_model.model.model.image_mm_projector.2.bias": torch.randn(64),
                  "base_model.model.model.vision_tower.extra.weight": torch.randn(3)}
    torch.save(projectors, root / "lora" / "non_lora_trainables.bin")
    # InternVideo2 stage-2 .pt: every block (the last one is unused), distillation/text extras, DeepSpeed wrapper
    full = InternVideo2Encoder(dataclasses.replace(tiny.video_encoder, return_block=-1))
    iv2 = {f"vision_encoder.{k}": v.clone() for k, v in full.state_dict().items()}
    iv2.update({name: torch.randn(4, 8) for name in IV2_EXTRAS})
    torch.save({"module": iv2}, root / "iv2.pt")
    # SAM2.1 Hiera-T in Meta's layout
    sam = _build_sam2()
    torch.save({"model": sam.state_dict()}, root / "sam2.pt")
    return dict(root=root, clip=clip, llm=llm, iv2=iv2, projectors=projectors, tok=tok)


def _convert(src, out, **kw):
    r = src["root"]
    args = dict(clip=r / "clip", llm=r / "phi3", llm_lora=r / "lora", internvideo2=r / "iv2.pt", sam2=r / "sam2.pt",
                out=out, preset="tiny")
    args.update(kw)
    return convert_components(**args)


@pytest.fixture(scope="module")
def converted(sources):
    report = _convert(sources, sources["root"] / "out")
    return report, VideoGLaMM.from_pretrained(sources["root"] / "out", device="cpu")


def test_report_accounts_for_every_tensor(sources, converted):
    report, _ = converted
    assert report.loaded["sam2"] == len(torch.load(sources["root"] / "sam2.pt", weights_only=True)["model"])
    assert report.unused["sam2"] == []
    iv2 = sources["iv2"]
    assert report.loaded["internvideo2"] + len(report.unused["internvideo2"]) == len(iv2)
    assert set(IV2_EXTRAS) <= set(report.unused["internvideo2"])
    assert "vision_encoder.blocks.1.attn.qkv.weight" in report.unused["internvideo2"]
    assert any(k.startswith("text_model.") for k in report.unused["clip"]) and "logit_scale" in report.unused["clip"]
    assert report.unused["llm"] == []
    assert report.unused["non_lora_trainables"] == ["base_model.model.model.vision_tower.extra.weight"]
    assert "seg_adapter" in report.initialised and "video_adapter" not in report.initialised
    assert any("520 to 513" in n for n in report.notes)


def test_clip_matches_transformers(sources, converted):
    _, model = converted
    px = torch.randn(1, 2, 3, 64, 64)
    ref = sources["clip"].vision_model(pixel_values=px[0], output_hidden_states=True).hidden_states[-2][:, 1:]
    with torch.no_grad():
        assert torch.allclose(model.image_encoder(px)[0], ref, atol=1e-5)


def test_llm_matches_merged_peft_model(sources, converted):
    from peft import PeftModel
    from transformers import Phi3ForCausalLM

    _, model = converted
    root = sources["root"]
    ref = PeftModel.from_pretrained(Phi3ForCausalLM.from_pretrained(root / "phi3"), root / "lora").merge_and_unload()
    ids = torch.tensor([[5, 17, 300, 42, 511, 7]])
    lm = model.language_model
    with torch.no_grad():
        ours = lm.logits(lm.hidden(lm.embed(ids))[0])
        theirs = ref(input_ids=ids).logits
    assert torch.allclose(ours[..., :512], theirs[..., :512], atol=1e-4)
    base_rows = Phi3ForCausalLM.from_pretrained(root / "phi3").model.embed_tokens.weight
    assert lm.embed_tokens.weight.shape[0] == 513 and torch.equal(lm.embed_tokens.weight[:512], base_rows[:512])
    assert model.seg_token_id == 512 and model.tokenizer.convert_tokens_to_ids("[SEG]") == 512


def test_internvideo2_and_projectors_arrive(sources, converted):
    _, model = converted
    for key, value in model.video_encoder.state_dict().items():
        assert torch.equal(value, sources["iv2"][f"vision_encoder.{key}"]), key
    p = sources["projectors"]
    assert torch.equal(model.video_adapter.proj[2].weight, p["base_model.model.model.mm_projector.2.weight"])
    assert torch.equal(model.image_adapter.proj[0].bias, p["base_model.model.model.image_mm_projector.0.bias"])


def test_sam2_matches_the_sam2_builder(sources, converted):
    _, model = converted
    ref = _build_sam2(str(sources["root"] / "sam2.pt"))
    sam = model.pixel_decoder.sam
    for key, value in ref.state_dict().items():
        assert torch.equal(sam.state_dict()[key], value), key
    px = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = sam.forward_image(px), ref.forward_image(px)
    assert torch.allclose(a["vision_features"], b["vision_features"], atol=1e-5)
    assert model.cfg.pixel_decoder.sam2_config == SAM2_CFG


def test_missing_key_and_wrong_shape_write_nothing(sources, tmp_path):
    iv2 = dict(sources["iv2"])
    iv2.pop("vision_encoder.blocks.0.attn.proj.bias")
    torch.save(iv2, tmp_path / "iv2.pt")
    with pytest.raises(MissingWeightsError, match=r"vision_encoder\.blocks\.0\.attn\.proj\.bias"):
        _convert(sources, tmp_path / "out", internvideo2=tmp_path / "iv2.pt")
    sam = torch.load(sources["root"] / "sam2.pt", weights_only=True)
    sam["model"]["sam_mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    torch.save(sam, tmp_path / "sam2.pt")
    with pytest.raises(ConfigError, match=r"sam_mask_decoder\.iou_token\.weight"):
        _convert(sources, tmp_path / "out", sam2=tmp_path / "sam2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iv2.pt", "sam2.pt"]


def test_detect_sam2_config():
    def fake(width, blocks, v21):
        sd = {"image_encoder.trunk.patch_embed.proj.weight": torch.empty(width, 3, 7, 7)}
        sd.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.empty(1) for i in range(blocks)})
        if v21:
            sd["no_obj_embed_spatial"] = torch.empty(1, 64)
        return sd

    assert detect_sam2_config(fake(144, 48, False)) == "configs/sam2/sam2_hiera_l.yaml"
    assert detect_sam2_config(fake(144, 48, True)) == "configs/sam2.1/sam2.1_hiera_l.yaml"
    assert detect_sam2_config(fake(96, 16, False)) == "configs/sam2/sam2_hiera_s.yaml"
    assert detect_sam2_config(fake(112, 24, True)) == "configs/sam2.1/sam2.1_hiera_b+.yaml"
    with pytest.raises(ConfigError, match="width 80"):
        detect_sam2_config(fake(80, 10, False))
