"""CAM vs LPCAM over seeds, on the embedded benchmark and its control (docs/studies/seeds.md).

Runs the default job (``python -m lpcam.run``, the ``lpcam`` command) once per seed and dataset,
each in its own process and run directory, then prints mean ± standard deviation (and min–max) of
the best-threshold seed mIoU and the part recalls of every method. ``--variant NAME='overrides'``
re-evaluates each seed's own checkpoint with other LPCAM settings (no retraining); its methods
appear as ``NAME:method``.
Extra arguments are passed to every run as Hydra overrides:

    lpcam-seed-study --seeds 0 1 2 --variant sigmoid='lpcam.score=sigmoid'
    lpcam-seed-study --seeds 0 1 2 --datasets synthetic_parts -- lpcam.k=20

(``python experiments/seed_study.py ...`` from a checkout does the same.) Runs go to
``outputs/seed_study/`` under the current directory unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Sequence


def job_dir(out: Path, name: str, seed: int, tag: str = "") -> Path:
    """Where :func:`run_job` runs ``name`` with ``seed``: ``out/<name>_seed<seed><tag>``."""
    return out / f"{name}_seed{seed}{tag}"


def run_job(out: Path, name: str, seed: int, overrides: list[str], tag: str = "") -> dict:
    """One run in :func:`job_dir` (skipped when its results.json exists, so an interrupted study
    resumes); ``overrides`` say which dataset."""
    run_dir = job_dir(out, name, seed, tag)
    results = run_dir / "results.json"
    if not results.is_file():
        cmd = [sys.executable, "-m", "lpcam.run", f"seed={seed}", "logger=csv",
               f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false", *overrides]  # fmt: skip
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads(results.read_text())


def describe(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:5.1f} ± {std:3.1f} ({min(values):.1f}–{max(values):.1f})"


def table(runs: list[dict]) -> str:
    """Markdown: method × (best mIoU, LPCAM − CAM, discriminative and shared part recall)."""
    methods = list(runs[0]["methods"])
    lines = [
        "| method | seed mIoU (best thr.) | Δ vs CAM | recall: discriminative | recall: shared |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        miou = [r["methods"][m]["best"]["miou"] for r in runs]
        delta = [r["methods"][m]["best"]["miou"] - r["methods"]["cam"]["best"]["miou"] for r in runs]
        disc = [r["methods"][m].get("part_recall", {}).get("discriminative") or 0.0 for r in runs]
        shared = [r["methods"][m].get("part_recall", {}).get("shared") or 0.0 for r in runs]
        d = "—" if m == "cam" else describe(delta)
        lines.append(f"| {m} | {describe(miou)} | {d} | {describe(disc)} | {describe(shared)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lpcam-seed-study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["synthetic_parts", "synthetic_parts_control"])
    parser.add_argument("--out", type=Path, default=Path("outputs/seed_study"))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME='OVERRIDES'",
                        help="re-evaluate each seed's checkpoint with these overrides")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args(argv)
    variants = dict(v.split("=", 1) for v in args.variant)
    report = []
    for dataset in args.datasets:
        runs = []
        for seed in args.seeds:
            base = run_job(args.out, dataset, seed, [f"dataset={dataset}", *args.overrides])
            ckpt = (args.out / f"{dataset}_seed{seed}" / "checkpoints" / "best.ckpt").resolve()
            for name, extra in variants.items():
                more = run_job(
                    args.out, dataset, seed, [f"dataset={dataset}", *args.overrides, f"ckpt_path={ckpt}", *extra.split()], f"_{name}"
                )
                base["methods"].update({f"{name}:{m}": r for m, r in more["methods"].items() if m != "cam"})
            runs.append(base)
        report.append(f"### {dataset} ({len(runs)} seeds: {', '.join(map(str, args.seeds))})\n\n{table(runs)}\n")
    text = "\n".join(report)
    print(text)
    (args.out / "study.md").write_text(text)


if __name__ == "__main__":
    main()
