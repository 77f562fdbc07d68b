"""Example: the `background` editor. Blur or replace everything except the target (mode: blur, color, image, transparent).

    python examples/edit_background.py CLIP.mp4 --target "the dog" [--masks MASKS] [-o OUT.mp4]

Without --masks the target is grounded by the shipped model (`vglamm.load_default_model()`).
"""

import argparse

from editing import edit_video

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("video")
parser.add_argument("--target", default="the dog")
parser.add_argument("--masks", help="RLE JSON or PNG folder instead of grounding")
parser.add_argument("--prompt", default="blur the background")
parser.add_argument("-o", "--output")
args = parser.parse_args()

result = edit_video(args.video, args.target, args.prompt, masks=args.masks, editor="background", output=args.output,
                    options={"mode": "blur"}, progress=True)
print(f"wrote {result.output} ({result.editor}); seconds per stage: "
      + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
