"""Held-out evaluation of a model trained on the synthetic world (the shipped default model and its ablations).

    python benchmarks/eval_default_model.py --model default --num-videos 100 [--json out.json]

Clips come from the ``test`` split of the synthetic world (seeds disjoint from training, see
``training.synthetic.generate.clip_seed``), rendered at the training resolution. For every clip:

* referring segmentation: every referring expression is asked with the reference's prompt; the first [SEG]'s masks
  are scored against the referred object(s) on every frame (J = region similarity, F = boundary F, MeViS-style:
  per-expression means, then averaged), separately for ``attribute`` and ``motion`` expressions; ``named`` is the
  share of answers whose grounded phrase names exactly the referred object ("the large red car", "the red car":
  what ``answers: name`` / ``short_name`` train), with J split by whether the name was right; ``exists``
  (``names_an_object``) is the share whose phrase picks out some single object of the clip, right or wrong (not,
  say, the colour of one object with the category of another);
  ``other`` is the share of expressions whose masks match another single object of the clip with J above 0.5
  (the wrong object segmented), and attribute expressions are also scored by what they state (colour, category,
  size or several: "the box" leaves SAM2 to recognise a shape), motion ones by what they ask (a direction, a stop, or
  no motion at all: "the object that stays still" is told from an object that stops by the first frames only);
* GCG: the grounded-caption question; mIoU and Recall (phrase encoder ``bow`` by default, ``minilm`` if installed)
  with ``vglamm.evaluation.evaluate_gcg``.

Prints a table and writes everything (per-expression rows included) to ``--json``.

``--compare OTHER.json`` also prints, by kind, the mean per-expression J&F difference against another run's output
on the same clips, with its standard error (how the README's "+0.055 ± 0.010" are measured).

``--stage0 RUN/prompt_pretrain`` scores SAM2 alone instead: the stage-0 weights of a run, each expression prompted
by the stage-0 description of the object(s) it refers to (``attribute_prompts.safetensors``), i.e. the masks the
model would get if its LLM always identified the object; ``--model`` then only gives the architecture.
``--stage0-descriptions stated`` describes each expression by the colour, category and size it states only ("the red
object": colour), for a stage 0 trained on partial descriptions (``prompt_pretrain.descriptions: partial``).

    python benchmarks/eval_default_model.py --model runs/X/export --stage0 runs/X/prompt_pretrain --num-videos 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `training` is a top-level package of the repository, not of the install
    sys.path.insert(0, str(ROOT))


def evaluate(model, num_videos: int, *, seed: int = 0, split: str = "test", height: int = 128, width: int = 128,
             num_frames: int = 16, phrase_encoders: tuple[str, ...] = ("bow", "minilm"), mode: str = "temporal", gcg: bool = True,
             progress: bool = True) -> dict:
    """Referring J/F per expression kind and GCG mIoU/Recall over ``num_videos`` held-out synthetic clips."""
    from training.synthetic.generate import clip_seed, make_clip
    from training.synthetic.language import named_objects
    from training.synthetic.world import WorldConfig
    from vglamm.evaluation import GCGRecord, evaluate_gcg, load_phrase_encoder
    from vglamm.modeling.processing import referring_prompt

    world = WorldConfig(num_frames=num_frames, height=height, width=width)
    rows, gcg_records = [], []
    it = range(num_videos)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="eval", unit="clip")
    for i in it:
        clip = make_clip(clip_seed(seed, split, i), world, clip_id=f"{split}_{i:06d}")
        empty = np.zeros(clip.frames.shape[:3], bool)
        exprs = clip.expressions
        answers = model.chat_batch([clip.frames] * len(exprs), [referring_prompt(e.text) for e in exprs],
                                   max_new_tokens=32, mode=mode) if exprs else []
        for e, ans in zip(exprs, answers):
            said = named_objects(clip.scene, ans.objects[0].phrase) if ans.objects else None
            rows.append({**score_expression(clip, e, ans.objects[0].masks if ans.objects else empty),
                         "grounded": bool(ans.objects), "named": said == list(e.obj_ids),
                         "names_an_object": said is not None, "answer": ans.raw_text})
        if gcg:
            ans = model.chat(clip.frames, None, max_new_tokens=96, mode=mode)
            cap = clip.caption
            gcg_records.append(GCGRecord(
                clip.clip_id, [clip.object_masks(o) for o in cap.obj_ids], cap.phrases,
                [o.masks for o in ans.objects], [o.phrase for o in ans.objects], cap.text, ans.text))

    out: dict = {"num_videos": num_videos, "split": split, "seed": seed, "world": [num_frames, height, width],
                 "mode": mode, "referring": _referring_summary(rows)}
    if gcg:
        out["gcg"] = {"mIoU": evaluate_gcg(gcg_records, captions=False)["mIoU"], "Recall": {},
                      "examples": [{"video": r.video_id, "gt": r.gt_caption, "pred": r.pred_caption}
                                   for r in gcg_records[:5]]}
        for name in phrase_encoders:
            try:
                encoder = load_phrase_encoder(name)
            except Exception as e:  # MiniLM's files are optional; report what was skipped
                out["gcg"]["Recall"][name] = None
                out["gcg"].setdefault("skipped", {})[name] = str(e)
                continue
            out["gcg"]["Recall"][name] = evaluate_gcg(gcg_records, encoder=encoder, captions=False)["Recall"]
    out["per_expression"] = rows
    return out


def evaluate_stage0(decoder, prompts, num_videos: int, *, seed: int = 0, split: str = "test", height: int = 128,
                    width: int = 128, num_frames: int = 16, mode: str = "temporal", descriptions: str = "full",
                    progress: bool = True) -> dict:
    """Referring J/F of SAM2 alone, each expression prompted by the stage-0 descriptions (``AttributePrompts``) of
    the objects it refers to, summed: the ceiling the full model reaches if it always identifies the object.
    ``descriptions="stated"``: each expression is described by only the colour, category and size it states ("the
    red object": colour; "the car moving left": category; "the object that stops": nothing, a zero prompt)."""
    import torch.nn.functional as F

    from training.synthetic.generate import clip_seed, make_clip
    from training.synthetic.world import WorldConfig

    world = WorldConfig(num_frames=num_frames, height=height, width=width)
    rows = []
    it = range(num_videos)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="eval stage 0", unit="clip")
    for i in it:
        clip = make_clip(clip_seed(seed, split, i), world, clip_id=f"{split}_{i:06d}")
        features = decoder.encode_frames(decoder.preprocess(clip.frames))
        objects = {o.obj_id: o for o in clip.scene.objects}
        for e in clip.expressions:
            referred = [objects[o] for o in e.obj_ids]
            if descriptions == "stated":
                prompt = prompts(referred, [tuple(e.stated)] * len(referred)).sum(0, keepdim=True)
            else:
                prompt = prompts(referred).sum(0, keepdim=True)
            logits = decoder.decode(features, prompt, mode=mode)[0]  # (T, h, w) low-res
            pred = (F.interpolate(logits[:, None].float(), size=(height, width), mode="bilinear",
                                  align_corners=False)[:, 0] > 0).cpu().numpy()
            rows.append({**score_expression(clip, e, pred), "grounded": True, "named": True,
                         "names_an_object": True, "answer": None})
    return {"num_videos": num_videos, "split": split, "seed": seed, "world": [num_frames, height, width],
            "mode": mode, "referring": _referring_summary(rows), "per_expression": rows}


def score_expression(clip, e, pred: np.ndarray) -> dict:
    """J, F and J&F of ``pred`` (T,H,W bool) against expression ``e``'s objects, and ``J_other``: its J against the
    best-matching single object the expression does not refer to (> 0.5: the answer segments another object)."""
    from vglamm.evaluation import boundary_f, region_similarity

    gt = np.any([clip.object_masks(o) for o in e.obj_ids], axis=0)
    j, f = float(region_similarity(gt, pred).mean()), float(boundary_f(gt, pred).mean())
    others = [float(region_similarity(clip.object_masks(o.obj_id), pred).mean())
              for o in clip.scene.objects if o.obj_id not in e.obj_ids]
    return {"video": clip.clip_id, "expression": e.text, "kind": e.kind, "stated": "+".join(e.stated) or "none",
            "asks": _asks(e), "J": j, "F": f, "JF": (j + f) / 2, "J_other": max(others, default=0.0)}


def _asks(e) -> str | None:
    """What a motion expression asks of its object's motion: ``static`` ("the object that stays still"), ``stops``
    ("the car that stops", "... moves left and then stops") or ``direction`` ("the car moving left", "... that keeps
    moving left"); None for attribute expressions. Static objects are told from stopping ones by the clip's first
    frames only, so the three are scored apart."""
    if e.kind != "motion":
        return None
    return "static" if e.query.get("static") else "stops" if e.query.get("stops") else "direction"


def _referring_summary(rows: list[dict]) -> dict:
    """J, F, J&F and naming rates per expression kind (and over all)."""
    out = {}
    for kind in ("attribute", "motion", "all"):
        sel = [r for r in rows if kind == "all" or r["kind"] == kind]
        if sel:
            out[kind] = {
                "num_expressions": len(sel),
                "J": float(np.mean([r["J"] for r in sel])), "F": float(np.mean([r["F"] for r in sel])),
                "JF": float(np.mean([r["JF"] for r in sel])),
                "grounded_rate": float(np.mean([r["grounded"] for r in sel])),
                "named_rate": float(np.mean([r["named"] for r in sel])),
                "names_an_object_rate": float(np.mean([r["names_an_object"] for r in sel])),
                "J_named": _mean_or_none([r["J"] for r in sel if r["named"]]),
                "J_misnamed": _mean_or_none([r["J"] for r in sel if not r["named"]]),
                "other_object_rate": _other_object_rate(sel)}
    for kind, key, by in (("attribute", "stated", "attribute_by_stated"), ("motion", "asks", "motion_by_asks")):
        out[by] = {}
        sel_kind = [r for r in rows if r["kind"] == kind]
        for value in sorted({r[key] for r in sel_kind}):
            sel = [r for r in sel_kind if r[key] == value]
            out[by][value] = {"num_expressions": len(sel), "JF": float(np.mean([r["JF"] for r in sel])),
                              "other_object_rate": _other_object_rate(sel)}
    return out


def _other_object_rate(rows: list[dict]) -> float:
    """The share of ``rows`` whose masks are another object's (J above 0.5 against it)."""
    return float(np.mean([r["J_other"] > 0.5 for r in rows]))


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def paired_difference(result: dict, baseline: dict) -> dict:
    """Per-expression J&F difference of ``result`` minus ``baseline`` (another run of this script on the same
    held-out clips), by expression kind: {kind: {"n", "mean", "sem"}} (sem: standard error of the mean). The two
    models answer the same expressions, so the paired difference is far tighter than the difference of means."""
    before = {(e["video"], e["expression"]): e["JF"] for e in baseline["per_expression"]}
    out = {}
    for kind in ("attribute", "motion"):
        d = np.array([e["JF"] - before[(e["video"], e["expression"])] for e in result["per_expression"]
                      if e["kind"] == kind and (e["video"], e["expression"]) in before])
        if len(d):
            sem = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            out[kind] = {"n": len(d), "mean": float(d.mean()), "sem": sem}
    return out


def format_table(result: dict, name: str = "") -> str:
    lines = [f"{name}  ({result['num_videos']} held-out clips, split {result['split']}, SAM2 {result['mode']})",
             f"{'expressions':<12}{'n':>6}{'J':>8}{'F':>8}{'J&F':>8}{'grounded':>10}{'named':>8}{'exists':>8}"
             f"{'other':>8}"]
    referring = dict(result["referring"])
    by_stated = referring.pop("attribute_by_stated", {})
    by_asks = referring.pop("motion_by_asks", {})
    for kind, r in referring.items():
        lines.append(f"{kind:<12}{r['num_expressions']:>6}{r['J']:>8.3f}{r['F']:>8.3f}{r['JF']:>8.3f}"
                     f"{r['grounded_rate']:>10.2f}{r['named_rate']:>8.2f}{r['names_an_object_rate']:>8.2f}"
                     f"{r['other_object_rate']:>8.2f}")
    if by_stated:
        lines.append("attribute expressions by what they state: " + "  ".join(
            f"{k} {r['JF']:.3f} (n {r['num_expressions']}, other {r['other_object_rate']:.2f})"
            for k, r in by_stated.items()))
    if by_asks:
        lines.append("motion expressions by what they ask: " + "  ".join(
            f"{k} {r['JF']:.3f} (n {r['num_expressions']}, other {r['other_object_rate']:.2f})"
            for k, r in by_asks.items()))
    if "gcg" in result:
        g = result["gcg"]
        recall = "  ".join(f"Recall[{k}] {v:.3f}" if v is not None else f"Recall[{k}] n/a"
                           for k, v in g["Recall"].items())
        lines.append(f"GCG: mIoU {g['mIoU']:.3f}  {recall}")
    return "\n".join(lines)


def load_stage0(model, folder):
    """``model``'s SAM2 with a run's stage-0 weights, and that stage's attribute prompts (typed error if missing)."""
    from safetensors.torch import load_file

    from training.synthetic.prompt_pretrain import AttributePrompts
    from vglamm.errors import MissingWeightsError

    folder = Path(folder)
    weights, descriptions = folder / "pixel_decoder.safetensors", folder / "attribute_prompts.safetensors"
    for f in (weights, descriptions):
        if not f.exists():
            raise MissingWeightsError(f"{f} not found: --stage0 takes a run's prompt_pretrain folder, written by a "
                                      "recipe with a prompt_pretrain section")
    decoder = model.pixel_decoder
    decoder.load_state_dict(load_file(str(weights)))
    prompts = AttributePrompts(decoder.cfg.prompt_dim)
    prompts.load_state_dict(load_file(str(descriptions)))
    return decoder.eval(), prompts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="saved-model folder or built-in name (default: 'default')")
    p.add_argument("--num-videos", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="world seed of the held-out split")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--mode", default="temporal", choices=["temporal", "framewise"])
    p.add_argument("--phrase-encoders", default="bow,minilm", help="comma list of bow | minilm (GCG Recall)")
    p.add_argument("--no-gcg", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="output JSON (default: ./eval.json)")
    p.add_argument("--stage0", default=None, metavar="DIR",
                   help="score a run's stage-0 SAM2 prompted by perfect descriptions (DIR: the run's prompt_pretrain "
                        "folder; --model gives the architecture)")
    p.add_argument("--stage0-descriptions", default="full", choices=["full", "stated"],
                   help="with --stage0: describe the referred objects fully, or by what the expression states only")
    p.add_argument("--compare", default=None, metavar="JSON",
                   help="another run's --json on the same clips: also print the per-expression J&F difference")
    a = p.parse_args(argv)

    import torch

    from vglamm.io.atomic import write_text_atomic
    from vglamm.modeling import VideoGLaMM

    if a.threads:
        torch.set_num_threads(a.threads)
    model = VideoGLaMM.from_pretrained(a.model, device="cpu")
    t0 = time.perf_counter()
    with torch.inference_mode():
        if a.stage0:
            decoder, prompts = load_stage0(model, a.stage0)
            result = evaluate_stage0(decoder, prompts, a.num_videos, seed=a.seed, split=a.split, height=a.height,
                                     width=a.width, num_frames=a.frames, mode=a.mode,
                                     descriptions=a.stage0_descriptions)
        else:
            result = evaluate(model, a.num_videos, seed=a.seed, split=a.split, height=a.height, width=a.width,
                              num_frames=a.frames, phrase_encoders=tuple(a.phrase_encoders.split(",")), mode=a.mode,
                              gcg=not a.no_gcg)
    result["model"] = str(a.model) if not a.stage0 else f"stage 0 of {a.stage0}"
    result["use_video_encoder"] = bool(getattr(model.cfg, "use_video_encoder", True))
    result["parameters"] = int(sum(p.numel() for p in model.parameters()))
    result["seconds"] = time.perf_counter() - t0
    print(format_table(result, name=result["model"]))
    if a.compare:
        diff = paired_difference(result, json.loads(Path(a.compare).read_text()))
        result["compared_with"] = {"json": a.compare, **diff}
        print(f"J&F per expression against {a.compare}: " + "  ".join(
            f"{kind} {d['mean']:+.3f} ± {d['sem']:.3f} (n {d['n']})" for kind, d in diff.items()))
    out = Path(a.json) if a.json else Path("eval.json")
    write_text_atomic(out, json.dumps(result, indent=1))  # --compare may name the file being replaced
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
