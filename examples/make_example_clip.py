"""Write the demo clip: a red car driving right along a road, with a person and a box, plus its masks.

    python examples/make_example_clip.py [--out examples/data]

Outputs ``red_car.mp4`` (24 frames, 256x160, H.264) and ``red_car_masks.json`` (COCO RLE per object and frame,
``vglamm.io.masks`` layout, each object with its phrase; the car is "a red car"). The scene is written out
explicitly (not sampled) so the clip never changes; the background texture uses a fixed seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path


from training.synthetic.render import render_scene
from training.synthetic.world import CATEGORY_BOX, Background, Scene, SceneObject
from vglamm.io.masks import save_rle_json
from vglamm.io.video import write_video

W, H, T, FPS = 256, 160, 24, 12.0


def _object(obj_id, category, colour, size, scale, start, velocity, depth, stop_frame=None, facing=1):
    bw, bh = CATEGORY_BOX[category]
    base = min(W, H)
    return SceneObject(obj_id, category, colour, size, bw * base * scale, bh * base * scale, start, velocity,
                       stop_frame, depth, facing)


def example_scene() -> Scene:
    road = Background("road", ((88, 88, 88), (96, 128, 84)), noise_seed=20250101)
    return Scene(W, H, T, FPS, road, (
        # The car crosses most of the frame in front of everything, so its whole body is visible.
        _object(1, "car", "red", "large", 1.15, (40.0, 100.0), (6.5, 0.0), depth=2),
        _object(2, "person", "yellow", "large", 1.0, (215.0, 52.0), (-3.0, 0.0), depth=0, facing=-1),
        _object(3, "box", "green", "small", 0.9, (150.0, 40.0), (0.0, 0.0), depth=1),
    ))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "data"))
    a = p.parse_args(argv)
    out = Path(a.out)
    scene = example_scene()
    frames, masks = render_scene(scene)
    phrases = {1: "a red car", 2: "a yellow person", 3: "a small green box"}
    video = write_video(out / "red_car.mp4", frames, FPS, crf=23)
    save_rle_json(out / "red_car_masks.json", {o.obj_id: masks[k] for k, o in enumerate(scene.objects)},
                  phrases=phrases, video="red_car.mp4")
    print(f"wrote {video} ({video.stat().st_size / 1024:.0f} KB) and {out / 'red_car_masks.json'}; "
          f"red car visible in {int(masks[0].any((1, 2)).sum())}/{T} frames, {int(masks[0].sum(axis=(1, 2)).mean())} px each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
