"""Report of a sweep directory: a markdown table of every job and method, and PNG plots.

    lpcam-report multirun/2026-11-25_10-00-00 [--out DIR] [--over seed lpcam.seed]

Reads each job's results.json (and error.json of failed jobs) and writes ``report.md``,
``miou_vs_k.png`` (when K varied), ``miou_vs_threshold.png`` and ``per_class_iou.png``. Jobs that
differ only in the ``--over`` settings (by default the training seed and the prototype draw) are
also summarised as one row each: mean ± std, min–max and n, the difference to CAM paired by job,
and ``miou_by_group.png``. The same numbers are in W&B when the sweep logged there; this needs
nothing but the files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from lpcam.sweeps import REPLICATES, read_sweep, sweep_report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lpcam-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep directory)")
    parser.add_argument("--over", nargs="*", default=list(REPLICATES), metavar="KEY",
                        help="settings whose jobs are repeats, summarised as mean ± std (default: %(default)s; --over alone: no summary)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        jobs = read_sweep(args.sweep_dir)
    except FileNotFoundError as err:
        sys.exit(f"lpcam-report: {err}")
    report = sweep_report(args.sweep_dir, args.out, jobs, args.over)
    failed = [j for j in jobs if j.results is None]
    print(report.read_text())
    print(f"\nwritten: {report}" + (f" ({len(failed)} failed job(s) listed)" if failed else ""))


if __name__ == "__main__":
    main()
