"""What a model's visual tokens say about the objects they show: linear probes on frozen tokens.

    python benchmarks/probe_visual_tokens.py --model runs/X/export [--train-clips 300 --test-clips 100]

Encodes synthetic clips (the train split to fit, the held-out test split to score) with the model's encoders and
V->L adapters, fits the linear heads of ``training.synthetic.token_probe.TokenProbe`` on the frozen tokens of the
last stream (InternVideo2's; CLIP's for an image-only model) of the cells that show an object, and prints, per
head, the accuracy on such held-out cells beside the majority-class baseline; motion also on the cells of moving
objects alone.
It tells whether an LLM that fails to answer "the object moving up" could have read the motion from its input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `training` is a top-level package of the repository, not of the install
    sys.path.insert(0, str(ROOT))


def encode(model, split: str, num_clips: int, world: dict, batch: int = 8):
    """(tokens (N, T*cells, D), targets (N, T*cells, heads)) of the last visual stream over ``num_clips`` clips."""
    import torch

    from training.synthetic.dataset import SyntheticDataset
    from training.synthetic.token_probe import token_targets
    from training.synthetic.world import WorldConfig

    cfg = model.cfg
    pool = cfg.adapters.video_pool if cfg.use_video_encoder else cfg.adapters.image_pool
    ds = SyntheticDataset(num_clips, split=split, config=WorldConfig(**world), p_gcg=1.0)
    tokens, targets = [], []
    with torch.no_grad():
        for start in range(0, num_clips, batch):
            samples = [ds[i] for i in range(start, min(start + batch, num_clips))]
            b = model.processor(samples)
            visual = model.encode_video(b["clip_pixels"], b["video_pixels"])
            tokens.append(visual[:, -cfg.num_frames * pool ** 2:].float())
            targets += [token_targets(s.meta["scene_objects"], s.meta["object_masks"], s.frame_indices, pool)
                        .reshape(-1, 4) for s in samples]
    return torch.cat(tokens), torch.as_tensor(np.stack(targets))


def fit_and_score(train, test, steps: int = 600, lr: float = 1e-2) -> dict:
    import torch
    import torch.nn.functional as F

    from training.synthetic.token_probe import HEADS, MOTIONS, TokenProbe

    (x, y), (xt, yt) = train, test
    mean, std = x.mean((0, 1)), x.std((0, 1)) + 1e-6  # standardised features: one learning rate fits all models
    x, xt = (x - mean) / std, (xt - mean) / std
    torch.manual_seed(0)
    probe = TokenProbe(x.shape[-1])
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-2)
    x, y = x[y[..., 0] > 0], y[y[..., 0] > 0]  # fit on the cells that show an object: what does it say of it
    for _ in range(steps):
        logits = probe(x)
        loss = sum(F.cross_entropy(logits[n], y[..., j]) for j, n in enumerate(HEADS))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = probe(xt)
    on = yt[..., 0] > 0  # cells that show an object
    rows = {}
    for j, name in enumerate(HEADS):
        truth, guess = yt[..., j][on], pred[name].argmax(-1)[on]
        majority = torch.bincount(truth).max().item() / len(truth)
        rows[name] = ((guess == truth).float().mean().item(), majority, len(truth))
    moving = yt[..., 3] > 1 + MOTIONS.index("still")
    truth, guess = yt[..., 3][moving], pred["motion"].argmax(-1)[moving]
    rows["motion (moving objects)"] = ((guess == truth).float().mean().item(),
                                       torch.bincount(truth).max().item() / len(truth), len(truth))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="a from_pretrained folder or short name (default: shipped)")
    p.add_argument("--train-clips", type=int, default=300)
    p.add_argument("--test-clips", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    import torch

    from vglamm.modeling import VideoGLaMM

    if args.threads:
        torch.set_num_threads(args.threads)
    model = VideoGLaMM.from_pretrained(args.model).eval()
    world = {"num_frames": 16, "height": 128, "width": 128}  # the held-out evaluation's clips
    rows = fit_and_score(encode(model, "train", args.train_clips, world), encode(model, "test", args.test_clips, world))
    stream = "InternVideo2" if model.cfg.use_video_encoder else "CLIP"
    print(f"linear probes on {args.model}'s {stream} tokens ({args.train_clips} clips to fit, {args.test_clips} "
          "held out)")
    print(f"| head | accuracy | majority class | cells |\n| --- | ---: | ---: | ---: |")
    for name, (acc, majority, n) in rows.items():
        print(f"| {name} | {acc:.3f} | {majority:.3f} | {n} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
