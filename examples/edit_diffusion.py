"""Example: the `diffusion` editor (WanVACE regenerates only the masked region, guided by the prompt).

    python examples/edit_diffusion.py CLIP.mp4 --target "the car" --prompt "a red sports car" \
        --pipeline Wan-AI/Wan2.1-VACE-1.3B-diffusers [--cpu-offload] [--masks MASKS] [-o OUT.mp4]

--pipeline takes a hub id or a local directory holding the diffusers pipeline. `--pipeline tiny` runs a tiny
randomly initialised pipeline instead (no download, CPU, seconds; the output is noise in the mask): it shows
the plumbing (padding, 4k+1 windows, crop and paste-back) on any machine.
"""

import argparse

from editing import edit_video

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("video")
parser.add_argument("--target", default="the car")
parser.add_argument("--masks", help="RLE JSON or PNG folder instead of grounding")
parser.add_argument("--prompt", default="a red sports car")
parser.add_argument("--pipeline", default="Wan-AI/Wan2.1-VACE-1.3B-diffusers")
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--cpu-offload", action="store_true")
parser.add_argument("-o", "--output")
args = parser.parse_args()

options = {"num_inference_steps": args.steps, "seed": args.seed, "cpu_offload": args.cpu_offload}
pipeline = args.pipeline
if pipeline == "tiny":
    from editing.testing import tiny_wan_vace_pipeline

    pipeline = tiny_wan_vace_pipeline()
    options.update(num_inference_steps=2, guidance_scale=1.0, max_area=64 * 64, pipeline_kwargs={"max_sequence_length": 16})
result = edit_video(args.video, args.target, args.prompt, masks=args.masks, editor="diffusion", pipeline=pipeline,
                    options=options, output=args.output, progress=True)
print(f"wrote {result.output}; seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
