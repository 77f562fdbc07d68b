"""Benchmark edit_video on CPU: seconds per stage and frames/s of each no-weights editor on an 854x480 clip,
and the diffusion editor's overhead outside the pipeline call (measured with the tiny random WanVACE pipeline).

    python benchmarks/bench_editing.py [--frames 16] [--video CLIP_OR_FRAME_DIR --masks MASKS]

Default clip: the DAVIS 2016 car-shadow sample (854x480) with its ground-truth masks, written to an MP4 first so
the load and write stages are real decoding/encoding.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from editing import edit_video

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016-sample"
STAGES = ["load", "ground", "condition", "edit", "composite", "write"]
EDITORS = [("recolor", "make it blue"), ("blur", None), ("pixelate", None), ("remove", None),
           ("background", "blur the background"), ("highlight", None)]


def davis_clip(n: int, workdir: Path):
    from PIL import Image

    from vglamm.io.video import write_video

    imgs = sorted((DAVIS / "JPEGImages/480p/car-shadow").glob("*.jpg"))[:n]
    anns = sorted((DAVIS / "Annotations/480p/car-shadow").glob("*.png"))[:n]
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in imgs])
    masks = np.stack([np.asarray(Image.open(p)) > 0 for p in anns])
    path = write_video(workdir / "clip.mp4", frames, 24)
    return path, masks


class TimedPipeline:
    """Wraps a pipeline and adds up the seconds spent inside its calls."""

    def __init__(self, pipe):
        self.pipe, self.seconds, self.calls = pipe, 0.0, 0

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kw):
        t0 = time.perf_counter()
        try:
            return self.pipe(**kw)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--video")
    ap.add_argument("--masks")
    ap.add_argument("--skip-diffusion", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.video:
            video, masks = args.video, args.masks
        else:
            video, masks = davis_clip(args.frames, tmp)
        from vglamm.io.video import probe_video

        info = probe_video(video)
        print(f"clip: {info.num_frames} frames, {info.size[1]}x{info.size[0]}, CPU\n")
        print("| editor | " + " | ".join(STAGES) + " | total s | frames/s |")
        print("|---" * (len(STAGES) + 3) + "|")
        for editor, prompt in EDITORS:
            r = edit_video(video, prompt=prompt, masks=masks, editor=editor, output=tmp / f"{editor}.mp4")
            total = sum(r.timings.values())
            cells = " | ".join(f"{r.timings[s]:.3f}" for s in STAGES)
            print(f"| {editor} | {cells} | {total:.2f} | {info.num_frames / total:.1f} |")

        if args.skip_diffusion:
            return
        from editing.testing import tiny_wan_vace_pipeline

        pipe = TimedPipeline(tiny_wan_vace_pipeline())
        opts = {"num_inference_steps": 2, "guidance_scale": 1.0, "max_area": 64 * 112, "window": 9, "overlap": 4,
                "pipeline_kwargs": {"max_sequence_length": 16}}
        # one warm-up call so that lazy initialisation is not counted as overhead
        edit_video(video, prompt="x", masks=masks, editor="diffusion", pipeline=pipe, options=opts, output=tmp / "w.mp4")
        pipe.seconds, pipe.calls = 0.0, 0
        r = edit_video(video, prompt="a red car", masks=masks, editor="diffusion", pipeline=pipe, options=opts,
                       output=tmp / "diffusion.mp4")
        total = sum(r.timings.values())
        outside = r.timings["edit"] - pipe.seconds
        print(f"\ndiffusion (tiny WanVACE, {pipe.calls} window calls at ~64x112): total {total:.2f} s, inside the "
              f"pipeline {pipe.seconds:.2f} s; editor overhead outside it (crop/resize/pad, PIL conversion, window "
              f"blending, paste-back) {outside:.3f} s = {1000 * outside / info.num_frames:.1f} ms/frame; other stages "
              + ", ".join(f"{s} {r.timings[s]:.3f}" for s in STAGES if s != "edit"))


if __name__ == "__main__":
    main()
