"""Peak memory of lpcam's random walk against the image's number of positions.

    python experiments/random_walk_memory.py            # three map sizes, each in a fresh process

Each size runs in its own process, which reports its peak resident memory (``VmHWM``) after the
walk minus its peak before it (torch and the inputs loaded), so the figure is what the walk itself
added. IRN's dense walk would hold the positions x positions transition matrix (float32) at least
twice while squaring it; that size is printed beside it for comparison, not run. The walk takes
2^3 steps here (IRN: 2^8): memory does not depend on the number of steps, time does linearly.
"""

from __future__ import annotations

import subprocess
import sys

SIZES = [(125, 94), (250, 188), (500, 375)]  # a VOC image at stride 4, then 2x and 4x each side
CLASSES = 4


def peak_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(h: int, w: int) -> None:
    import time

    import torch

    from lpcam.refine.random_walk import random_walk

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    boundary = torch.rand(h, w, generator=g) ** 3
    cams = torch.rand(CLASSES, h, w, generator=g)
    before = peak_kb()
    start = time.perf_counter()
    random_walk(cams, boundary, exp_times=3)
    print(f"{(peak_kb() - before) / 1024:.1f} {time.perf_counter() - start:.2f}")


def main() -> None:
    print("| map (h x w) | positions | walk's peak memory (MB) | MB per 1,000 positions | time, 8 steps (s) | IRN's dense matrix (MB, once) |")
    print("|---|---|---|---|---|---|")
    for h, w in SIZES:
        out = subprocess.run([sys.executable, __file__, "--child", str(h), str(w)], capture_output=True, text=True, check=True)
        mb, seconds = map(float, out.stdout.split())
        n = h * w
        print(f"| {h} x {w} | {n:,} | {mb:.1f} | {mb / n * 1000:.2f} | {seconds:.2f} | {n * n * 4 / 2**20:,.0f} |")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
