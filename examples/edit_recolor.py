"""Example: the `recolor` editor. Hue and chroma from the colour (CIELAB), shading and texture kept.

    python examples/edit_recolor.py CLIP.mp4 --target "the car" [--masks MASKS] [-o OUT.mp4]

Without --masks the target is grounded by the shipped model (`vglamm.load_default_model()`).
"""

import argparse

from editing import edit_video

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("video")
parser.add_argument("--target", default="the car")
parser.add_argument("--masks", help="RLE JSON or PNG folder instead of grounding")
parser.add_argument("--prompt", default="make it blue")
parser.add_argument("-o", "--output")
args = parser.parse_args()

result = edit_video(args.video, args.target, args.prompt, masks=args.masks, editor="recolor", output=args.output,
                    options=None, progress=True)
print(f"wrote {result.output} ({result.editor}); seconds per stage: "
      + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
