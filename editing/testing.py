"""Tiny randomly initialised pipelines for tests, examples and benchmarks (no download, CPU, well under a second)."""

from __future__ import annotations


def _tiny_tokenizer():
    """A word-level tokenizer built in memory: T5's real one would have to be downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = "make it blue red a the car dog cat turn into green replace with video of".split()
    tok.train_from_iterator([" ".join(words)] * 4, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")


def tiny_wan_vace_pipeline(seed: int = 0):
    """A WanVACEPipeline with tiny random components: the real pipeline code path at toy size."""
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    z = 4
    vae = AutoencoderKLWan(base_dim=8, z_dim=z, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * z, latents_std=[1.0] * z)
    tokenizer = _tiny_tokenizer()
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=4, num_heads=2, num_layers=1,
                                           d_ff=32, decoder_start_token_id=0))
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=z, out_channels=z,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, vace_layers=[0], rope_max_seq_len=32,
        vace_in_channels=2 * z + 64,  # inactive + reactive latents, plus the 8x8 mask patches
    )
    pipe = WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), transformer=transformer)
    for module in (vae, text_encoder, transformer):
        module.eval()  # built modules start in training mode: dropout would make seeded runs differ
    pipe.set_progress_bar_config(disable=True)
    return pipe
