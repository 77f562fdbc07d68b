"""Decode and write throughput on the DAVIS car-shadow clip (40 frames, 854x480): PyAV vs decord.

Usage: python benchmarks/bench_io.py [--repeats 3] [--frames DIR]
Encodes the JPEG frames to an H.264 MP4 once (crf 18), then times:
  write      write_video of the 40 frames (preset medium and veryfast)
  seq        load_video of every frame
  sampled    load_video(fps=2, max_frames=4): sparse sampling as the model does it (1 fps, <= 64 frames)
Prints the best of ``--repeats`` runs as frames per second of returned frames.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vglamm.io import load_video, write_video

DEFAULT_FRAMES = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016-sample"
                  / "JPEGImages" / "480p" / "car-shadow")


def best_of(fn, repeats: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return min(times), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES, help="folder of JPEG frames")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    source = load_video(args.frames)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mp4 = Path(tmp) / "clip.mp4"
        for preset in ("medium", "veryfast"):
            def write() -> int:
                write_video(mp4, source.frames, 24, preset=preset)
                return len(source)

            secs, n = best_of(write, args.repeats)
            rows.append((f"write H.264 crf18 {preset}", "pyav", n, secs))
        secs, n = best_of(lambda: len(load_video(args.frames)), args.repeats)
        rows.append(("read JPEG folder", "opencv", n, secs))
        for backend in ("pyav", "decord"):
            secs, n = best_of(lambda: len(load_video(mp4, backend=backend)), args.repeats)
            rows.append(("read sequential", backend, n, secs))
            secs, n = best_of(lambda: len(load_video(mp4, fps=2, max_frames=4, backend=backend)), args.repeats)
            rows.append(("read sampled fps=2 max=4", backend, n, secs))
            secs, n = best_of(lambda: len(load_video(mp4, size=224, backend=backend)), args.repeats)
            rows.append(("read sequential size=224", backend, n, secs))

    h, w = source.size
    print(f"clip: {args.frames.name}, {len(source)} frames, {w}x{h}; best of {args.repeats}")
    print(f"| {'operation':<28} | {'backend':<7} | {'frames':>6} | {'ms':>8} | {'frames/s':>9} |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 8}|{'-' * 10}|{'-' * 11}|")
    for name, backend, n, secs in rows:
        print(f"| {name:<28} | {backend:<7} | {n:>6} | {secs * 1e3:>8.1f} | {n / secs:>9.1f} |")


if __name__ == "__main__":
    main()
