"""Run every benchmark in this folder with its defaults, one after the other (`make bench`).

Each script prints its own table; this one only runs them and reports which failed. Timings on a shared or
busy machine vary a lot: run on an idle one and compare numbers from the same machine only.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_io.py", "bench_metrics.py", "bench_editing.py", "bench_model.py"]


def main() -> int:
    failed = []
    for name in SCRIPTS:
        print(f"\n=== {name} " + "=" * (70 - len(name)), flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / name)])
        print(f"--- {name}: {'ok' if code == 0 else f'FAILED ({code})'} in {time.perf_counter() - start:.0f} s")
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
