"""Does each [SEG] prompt point at its own object? The language side alone, scored in stage 0's description space.

    python benchmarks/probe_binding.py --model runs/X/export \
        --descriptions runs/X/prompt_pretrain/attribute_prompts.safetensors [--num-videos 120]

Held-out referring questions of the synthetic world (answers repeat the expression, as the shipped recipe trains)
go through the LLM teacher-forced, SAM2 left out (`model(batch, decode_masks=False)`), and each [SEG]'s prompt
(L->V output) counts as right when, of the descriptions stage 0 learnt for the clip's objects, its own object's
is the nearest. Descriptions state what the phrase states when that singles the object out, else everything
(the recipe's `distill_onto: stated` targets). An attribute phrase names its object's attributes itself, so its
score checks the adapter; a motion phrase ("the car moving left") needs the LLM to find which object moves that
way and read that object's colour and size from the visual tokens: that is the binding the score measures.
Chance: 1 / the objects that have the colour, category and size the expression states (its motion left out).
With a visual readout in the L->V adapter (`adapters.seg_attention_heads`), "readout on it" is how often, of the
clip's objects, its own gets the most of the readout's attention (summed over the tokens whose cells it covers at
the LLM's frames; training/readout_supervision.py): where the readout looks, before what it reads there.
Takes ~1 min for 120 clips on one CPU thread.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `training` is a top-level package of the repository, not of the install
    sys.path.insert(0, str(ROOT))


def subtype(kind: str, query: dict) -> str:
    if kind == "attribute":
        return "attribute"
    if query.get("static"):
        return "motion: static"
    if query.get("stops"):
        return "motion: stops"
    return "motion: keeps moving" if query.get("stops") is False else "motion: direction"


def binding(model, descriptions, num_videos: int, batch: int = 8, seed: int = 0) -> dict:
    """{group: (accuracy, chance, count, readout on its object or None without a readout)} over the [SEG]s of
    ``num_videos`` held-out clips (groups: each kind, each motion subtype)."""
    import torch

    from training.data.base import FrameSampling
    from training.readout_supervision import readout_targets, visual_token_cover
    from training.synthetic.dataset import SyntheticDataset
    from training.synthetic.generate import make_clip
    from training.synthetic.language import ATTRIBUTES, matching
    from training.synthetic.world import WorldConfig

    world = WorldConfig(num_frames=16, height=128, width=128)  # the held-out evaluation's clips
    data = SyntheticDataset(num_videos, seed, "test", world, FrameSampling(num_frames=model.cfg.num_frames),
                            p_gcg=0.0, exprs_per_sample=3, answers="phrase", random_templates=False)
    has_readout = getattr(model.cfg.adapters, "seg_attention_heads", 0) > 0
    hits, chance, looks = defaultdict(list), defaultdict(list), defaultdict(list)
    with torch.no_grad():
        for start in range(0, num_videos, batch):
            samples = [data[i] for i in range(start, min(start + batch, num_videos))]
            inputs = model.processor(samples)
            num_seg = [s.num_seg() for s in samples]
            if has_readout:  # any targets make the forward return the readout's attention
                inputs["readout_targets"] = readout_targets(samples, num_seg, model.cfg)
            out = model(inputs, decode_masks=False)
            prompts = out.seg_prompts.float().split(num_seg)
            attention = out.seg_attention.split(num_seg) if has_readout else [None] * len(samples)
            for i, s, rows, att in zip(range(start, num_videos), samples, prompts, attention):
                clip = make_clip(data.records()[i].seed, world)
                queries = {e.text: e.query for e in clip.expressions}
                scene = clip.scene.objects
                ids = [o.obj_id for o in scene]
                on = visual_token_cover(s.meta["object_masks"], model.cfg) > 0 if has_readout else None
                for j, (row, obj, said, (kind, text)) in enumerate(zip(rows, s.meta["seg_objects"],
                                                                       s.meta["seg_described"], s.meta["expressions"])):
                    if obj is None or not said:  # a group of objects, or nothing stated
                        continue
                    keep = tuple(a for a in ATTRIBUTES if a in said)
                    dist = ((descriptions(scene, [keep] * len(scene)) - row) ** 2).sum(-1)
                    right = ids[int(dist.argmin())] == obj.obj_id
                    query = queries[text]
                    candidates = matching(clip.scene, {k: v for k, v in query.items() if k in ATTRIBUTES})
                    for group in {kind, subtype(kind, query)}:
                        hits[group].append(right)
                        chance[group].append(1 / len(candidates))
                        if has_readout:  # the object whose tokens hold the most of this [SEG]'s attention
                            mass = (att[j][None] * on).sum(-1)
                            looks[group].append(ids[int(mass.argmax())] == obj.obj_id)
    return {g: (float(np.mean(hits[g])), float(np.mean(chance[g])), len(hits[g]),
                float(np.mean(looks[g])) if has_readout else None) for g in sorted(hits)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="a from_pretrained folder or short name (default: shipped)")
    p.add_argument("--descriptions", required=True, type=Path,
                   help="stage 0's attribute_prompts.safetensors (in the run's prompt_pretrain/ folder)")
    p.add_argument("--num-videos", type=int, default=120)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    import torch
    from safetensors.torch import load_file

    from training.synthetic.prompt_pretrain import AttributePrompts
    from vglamm.errors import MissingWeightsError
    from vglamm.modeling import VideoGLaMM

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.descriptions.is_file():
        raise MissingWeightsError(f"{args.descriptions} does not exist: pass the attribute_prompts.safetensors that "
                                  "stage 0 of the model's run wrote (runs/X/prompt_pretrain/)")
    model = VideoGLaMM.from_pretrained(args.model).eval()
    descriptions = AttributePrompts(model.cfg.pixel_decoder.prompt_dim)
    descriptions.load_state_dict(load_file(str(args.descriptions)))
    rows = binding(model, descriptions.requires_grad_(False), args.num_videos)
    print(f"[SEG] prompts nearest their own object's description: {args.model}, {args.num_videos} held-out clips")
    print("| expressions | right | chance | [SEG]s | readout on it |\n| --- | ---: | ---: | ---: | ---: |")
    for name, (acc, chance, n, looks) in rows.items():
        print(f"| {name} | {acc:.3f} | {chance:.3f} | {n} | {'-' if looks is None else f'{looks:.3f}'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
