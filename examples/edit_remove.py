"""Example: the `remove` editor. Fill from frames where the background is visible, OpenCV inpainting for the rest.

    python examples/edit_remove.py CLIP.mp4 --target "the person" [--masks MASKS] [-o OUT.mp4]

Without --masks the target is grounded by the shipped model (`vglamm.load_default_model()`).
"""

import argparse

from editing import edit_video

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("video")
parser.add_argument("--target", default="the person")
parser.add_argument("--masks", help="RLE JSON or PNG folder instead of grounding")
parser.add_argument("--prompt", default="remove it")
parser.add_argument("-o", "--output")
args = parser.parse_args()

result = edit_video(args.video, args.target, args.prompt, masks=args.masks, editor="remove", output=args.output,
                    options=None, progress=True)
print(f"wrote {result.output} ({result.editor}); seconds per stage: "
      + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
