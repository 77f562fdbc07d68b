"""Time each stage of VideoGLaMM inference and the KV-cache speed-up.

    python benchmarks/bench_model.py                    # tiny preset on CPU (+ paper preset, random bf16, on CUDA)
    python benchmarks/bench_model.py --preset paper --device cuda --frames 64 --new-tokens 64

Stages: video decode, CLIP, InternVideo2, LLM prefill, per-token decode (KV cache), SAM2 per frame, end-to-end
chat, and cached vs uncached generation (uncached = recompute the sequence every token; "reference" additionally
re-encodes the video every token, as the paper's code does). Weights are random: timings only.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vglamm.io.video import load_video, write_video
from vglamm.modeling.configuration import AdapterConfig
from vglamm.modeling import VideoGLaMM, VideoGLaMMConfig
from vglamm.modeling.generation import generate, position_ids_from_mask
from vglamm.modeling.language_model import add_seg_token, train_tiny_tokenizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat: int = 3):
    """Best of ``repeat`` runs after one warm-up (seconds, result)."""
    out = fn()
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def build(preset: str, device: torch.device) -> VideoGLaMM:
    torch.manual_seed(0)
    if preset == "tiny":
        return VideoGLaMM.from_config(VideoGLaMMConfig.tiny()).to(device).eval()
    if preset == "paper-length":
        # Tiny widths, the paper's sequence: 16 frames x (12x12 CLIP + 8x8 InternVideo2) = 3328 visual tokens.
        # At this length the cost of recomputing the sequence per token shows even on a CPU.
        base = VideoGLaMMConfig.tiny()
        image = dataclasses.replace(base.image_encoder,
                                    vision_config={**base.image_encoder.vision_config, "image_size": 192, "patch_size": 16})
        llm = dataclasses.replace(base.language_model, llm_config={
            **base.language_model.llm_config, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
            "max_position_embeddings": 4096})
        cfg = VideoGLaMMConfig.tiny(image_encoder=image, video_encoder=dataclasses.replace(base.video_encoder, img_size=112),
                                    language_model=llm, num_frames=16,
                                    adapters=AdapterConfig(image_pool=12, video_pool=8, seg_dim=64))
        return VideoGLaMM.from_config(cfg).to(device).eval()
    # Paper-size architecture, random weights; the local tiny tokenizer stands in for Phi-3's (no hub here),
    # so the vocabulary is ~500 rows instead of 32k: the LM head is slightly cheaper than the real one.
    cfg = VideoGLaMMConfig.paper()
    cfg.language_model.llm_config = dict(model_type="phi3", hidden_size=3072, intermediate_size=8192,
                                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                         max_position_embeddings=4096, sliding_window=2047)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = train_tiny_tokenizer()
    add_seg_token(tokenizer)
    with torch.device(device):
        model = VideoGLaMM.from_config(cfg, tokenizer=tokenizer, torch_dtype=dtype)
    return model.to(device).eval()


def run(preset: str, device: torch.device, frames: int, size: tuple[int, int], new_tokens: int) -> list[tuple]:
    rows: list[tuple] = []
    model = build(preset, device)
    if device.type == "cuda":  # what the weights take, then the peak over everything below
        torch.cuda.synchronize()
        rows.append(("GPU memory: weights", torch.cuda.memory_allocated(device) / 2**30, "GiB"))
        torch.cuda.reset_peak_memory_stats(device)
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 255, (frames, *size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        write_video(path, clip, fps=10)
        t, video = timed(lambda: load_video(path), device, repeat=2)
        rows.append(("video decode", t, f"{len(video.frames)} frames {size[0]}x{size[1]}"))

        with torch.no_grad():
            proc = model.processor
            vid_in = model._resolve_video(video)
            c, v = proc.llm_pixels(vid_in.llm_frames)
            c, v = c[None].to(device, model.dtype), v[None].to(device, model.dtype)
            t_clip, img_tok = timed(lambda: model.image_encoder(c), device)
            rows.append(("CLIP", t_clip, f"{c.shape[1]} frames -> {tuple(img_tok.shape[2:])} tokens/frame"))
            t_iv2, vid_tok = timed(lambda: model.video_encoder(v), device)
            rows.append(("InternVideo2", t_iv2, f"{v.shape[1]} frames -> {tuple(vid_tok.shape[2:])} tokens/frame"))

            visual = model.encode_video(c, v)
            ids, mask = model._encode_prompts([proc.prompt_ids("Describe the video.")])
            embeds, mask, _, _ = model.merge_inputs(ids, mask, visual)
            lm = model.language_model
            t_pre, _ = timed(lambda: lm.hidden(embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                                               use_cache=True), device)
            rows.append(("LLM prefill", t_pre, f"{embeds.shape[1]} tokens ({visual.shape[1]} visual)"))

            def gen(use_cache):
                return generate(lm, embeds, mask, seg_token_id=model.seg_token_id, stop_token_ids=set(),
                                pad_token_id=proc.pad_token_id, max_new_tokens=new_tokens, use_cache=use_cache)

            t_cached, _ = timed(lambda: gen(True), device, repeat=2)
            rows.append(("decode / token (KV cache)", (t_cached - t_pre) / new_tokens, f"{new_tokens} tokens"))
            t_uncached, _ = timed(lambda: gen(False), device, repeat=1)
            rows.append(("generate, KV cache", t_cached, f"{new_tokens} tokens"))
            rows.append(("generate, recompute (no cache)", t_uncached, f"{new_tokens} tokens"))
            t_reference = t_uncached + new_tokens * (t_clip + t_iv2)
            rows.append(("generate, reference-style (est.)", t_reference, "recompute + re-encode video per token"))

            prompts = model.seg_adapter(torch.randn(1, lm.hidden_size, device=device, dtype=model.dtype), visual)
            with model._sam_autocast():
                t_sam, _ = timed(lambda: model.pixel_decoder.predict_video(vid_in.sam_stream(), prompts,
                                                                           vid_in.size, mode="temporal"), device, 2)
            rows.append(("SAM2 / frame (temporal, 1 object)", t_sam / vid_in.num_frames,
                         f"{vid_in.num_frames} frames at {model.cfg.pixel_decoder.image_size}px"))

        t_chat, ans = timed(lambda: model.chat(path, "Describe the video.", max_new_tokens=new_tokens), device, 1)
        rows.append(("chat end-to-end (path in)", t_chat, f"{len(ans.objects)} objects (random weights)"))
    if device.type == "cuda":
        rows.append(("GPU memory: peak", torch.cuda.max_memory_allocated(device) / 2**30, "GiB (over every stage above)"))
    speed = (t_uncached / t_cached, t_reference / t_cached)
    return rows, speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=["tiny", "paper-length", "paper"], default=None,
                    help="default: tiny and paper-length (tiny widths, the paper's 3328 visual tokens) on CPU, "
                         "plus paper when CUDA is available")
    ap.add_argument("--device", default=None)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    plans = [(args.preset, torch.device(args.device or ("cuda" if cuda and args.preset == "paper" else "cpu")))] \
        if args.preset else [("tiny", torch.device("cpu")), ("paper-length", torch.device("cpu"))] + (
            [("paper", torch.device("cuda"))] if cuda else [])
    for preset, device in plans:
        rows, (vs_recompute, vs_reference) = run(preset, device, args.frames, (args.height, args.width), args.new_tokens)
        print(f"\n== VideoGLaMM {preset} on {device} ({torch.get_num_threads()} CPU threads) ==")
        print(f"{'stage':36s} {'time':>12s}  notes")
        for name, value, note in rows:
            if note.startswith("GiB"):
                print(f"{name:36s} {value:10.2f} {note}")
            else:
                print(f"{name:36s} {value * 1000:10.1f}ms  {note}")
        print(f"speed-up of KV-cached generation: {vs_recompute:.1f}x vs recompute, "
              f"{vs_reference:.1f}x vs reference-style (re-encode video per token)")


if __name__ == "__main__":
    main()
