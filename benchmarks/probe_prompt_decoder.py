"""Can SAM2 learn to segment the *referred* object from a prompt token, trained from scratch? (issue 7's bottleneck)

The language side is taken out of the question: each referring expression of the synthetic world gets its own
learnable prompt embedding (an oracle that routes the expression perfectly), and only SAM2 plus that table train,
with the BCE + Dice of the model's loss on SAM2's low-res logits. If IoU stays low here, no amount of LLM training
will make the full model ground by expression; the decoder itself has to learn (or start from) promptable weights.

    python benchmarks/probe_prompt_decoder.py --steps 2000                  # nano SAM2 (the default model's)
    python benchmarks/probe_prompt_decoder.py --steps 400 --decoder tiny    # Hiera-T, 31x larger, ~20x slower

Measured on the 2-core CPU machine (attribute expressions, framewise): nano plateaus at IoU ~0.35 after 4,000
steps; Hiera-T is at 0.25 after 400 steps, the same curve as nano.
"""

from __future__ import annotations

import argparse
import time
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from training.data import build_dataset
from vglamm.modeling.losses import mask_losses
from vglamm.modeling.pixel_decoder import PixelDecoderConfig, SAM2PixelDecoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decoder", choices=["nano", "tiny"], default="nano")
    ap.add_argument("--mode", choices=["framewise", "temporal"], default="framewise")
    ap.add_argument("--kind", choices=["attribute", "motion"], default="attribute")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--report-every", type=int, default=250)
    args = ap.parse_args()

    torch.manual_seed(0)
    data = build_dataset("synthetic", "unused", num_videos=20000, num_frames=4, p_gcg=0.0,
                         world={"num_frames": 8, "height": 128, "width": 128})
    decoder = SAM2PixelDecoder(getattr(PixelDecoderConfig, args.decoder)())
    low_res = decoder.cfg.image_size // 4
    table = torch.nn.Embedding(1024, decoder.cfg.prompt_dim)  # one prompt per expression string (hashed)
    torch.nn.init.normal_(table.weight, std=1.0)
    opt = torch.optim.AdamW(list(decoder.parameters()) + list(table.parameters()), lr=args.lr)

    ious: list[float] = []
    rows = []
    start, i = time.perf_counter(), 0
    for step in range(args.steps):
        losses = []
        while len(losses) < args.batch:
            sample = data[i % len(data)]
            i += 1
            if sample.meta.get("kind") != args.kind:
                continue
            key = torch.tensor([zlib.crc32(sample.meta["expression"].encode()) % len(table.weight)])
            target = F.interpolate(torch.as_tensor(sample.masks[:1]).float(), size=(low_res, low_res), mode="nearest")
            logits = decoder.decode(decoder.encode_frames(decoder.preprocess(sample.frames)), table(key),
                                    mode=args.mode)
            bce, dice = mask_losses([logits], [target])
            losses.append(2.0 * bce + 0.5 * dice)
            pred, gt = logits[0] > 0, target[0] > 0.5
            ious.append(((pred & gt).sum() / (pred | gt).sum().clamp(min=1)).item())
        opt.zero_grad()
        torch.stack(losses).mean().backward()
        opt.step()
        if (step + 1) % args.report_every == 0:
            rows.append((step + 1, float(np.mean(ious[-args.report_every:])), time.perf_counter() - start))
            print(f"step {rows[-1][0]:6d}  IoU {rows[-1][1]:.3f}  {rows[-1][2]:.0f}s", flush=True)

    print(f"\n== oracle-prompted SAM2 ({args.decoder}, {args.mode}, {args.kind} expressions) ==")
    print(f"{'step':>6s} {'mean IoU':>9s} {'seconds':>8s}")
    for step, iou, seconds in rows:
        print(f"{step:6d} {iou:9.3f} {seconds:8.0f}")


if __name__ == "__main__":
    main()
