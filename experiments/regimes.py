"""Where do local prototypes help? Regimes (how the backbone was trained) × benchmarks × methods.

    python experiments/regimes.py --seeds 0 1 2                       # the whole grid
    python experiments/regimes.py --regimes scratch frozen --benchmarks parts one_body --seeds 0

Each cell runs the job (``python -m lpcam.run``) once per seed in its own directory under
``--out`` (a finished run is not run again, so an interrupted study resumes), then the study
prints one markdown table — mean ± std over seeds of each method's best-threshold seed mIoU, its
difference to CAM, and its recall of the objects' discriminative heads and shared bodies — and
draws ``regimes.png``: for each cell, CAM's and LPCAM's body recall beside their mIoU.

``--record FILE`` keeps what the table and figure read from every run (seed, overrides, timings
and each method's best, default and curve points, without the per-class IoUs) in one JSON file,
merged run by run, and fills the cells whose run directories are gone from it: the study page's
(``docs/studies/regimes.md``) table and figure come from ``docs/regimes_runs.json``, so a later session that adds a seed or a
cell redraws them whole without rerunning the rest.

The paper's mechanism predicts a gain where (1) CAM under-covers a part because that part does
not tell the classes apart, and (2) the backbone still represents the part, so its features form
a prototype the classifier scores as the class. ``docs/studies/regimes.md`` states
what each row should show if that holds, written before the runs, and the rows as measured.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Sequence

from lpcam.cli.seed_study import describe, job_dir, run_job

# How the backbone is trained. The pretrained ones read ImageNet weights from the installed
# efficientnet-lite0 package (backbone.pretrained=true never downloads).
REGIMES: dict[str, list[str]] = {
    "scratch": [],  # the default: a small ResNet trained from scratch on the benchmark
    # the classifier at the backbone's LR (classifier_lr_mult=1): 10x overshoots on fixed features
    # (docs/backbones.md, the frozen-backbone mode: validation loss 2.03 against 0.32 after 6 epochs)
    "frozen": ["backbone=efficientnet_lite0", "backbone.pretrained=true", "model.freeze_backbone=true",
               "model.classifier_lr_mult=1"],
    "finetuned": ["backbone=efficientnet_lite0", "backbone.pretrained=true"],
}

# Benchmarks: a dataset config and the generator settings that differ from it.
BENCHMARKS: dict[str, list[str]] = {
    "parts": ["dataset=synthetic_parts"],  # heads tell the classes apart; bodies shared by pairs of classes
    "control": ["dataset=synthetic_parts_control"],  # every class its own body: nothing for LPCAM to add
    "digits": ["dataset=digits"],  # real handwriting, no designed parts
    # every class shares one body texture: the body says nothing about the class, so a classifier
    # has no reason to weight it and CAM should miss it, while any backbone still sees the texture
    "one_body": ["dataset=synthetic_parts", "dataset.generator.group_size=6"],
    # twice the size (objects scale with the image): what a pretrained backbone at output stride 16
    # needs for more than a 6 × 6 feature grid, and bodies that reach beyond a head's receptive field
    "parts_192": ["dataset=synthetic_parts", "dataset.generator.image_size=192"],
    "control_192": ["dataset=synthetic_parts_control", "dataset.generator.image_size=192"],
    "one_body_192": ["dataset=synthetic_parts", "dataset.generator.group_size=6", "dataset.generator.image_size=192"],
    # the digits at twice the size, the digits with them (56-80 px: 3-5 cells of a stride-16 grid)
    "digits_192": ["dataset=digits", "dataset.generator.image_size=192", "dataset.generator.digit_size=[56,80]"],
}

METHODS = ("cam", "lpcam_official", "lpcam_fg_only", "lpcam_max")


# Every cell builds its prototypes as the measured cells did, with lpcam's defaults of then: from the
# training split (2,000 images), seeded k-means++ with the relative stop, at most 20,000 features a
# side, the images rescaled as tensors. Later defaults differ (docs/studies/official-protocol.md);
# pinned here, the study stays one protocol.
STUDY = [
    "dataset.prototype_split=null", "evaluation.rescale=bilinear", "evaluation.upsample=direct", "lpcam.tau_ties=background",
    "lpcam.max_features_per_class=20000", "lpcam.kmeans_init=kmeans++", "lpcam.kmeans_stop=relative",
    "lpcam.kmeans_tol=1e-4", "lpcam.kmeans_max_iter=100",
]  # fmt: skip


def run_cell(out: Path, regime: str, benchmark: str, seed: int, extra: Sequence[str]) -> dict:
    """One (regime, benchmark, seed) job; run_job names it ``<regime>-<benchmark>_seed<seed>``."""
    return run_job(out, f"{regime}-{benchmark}", seed, [*BENCHMARKS[benchmark], *REGIMES[regime], *STUDY, *extra])


def finished_cell(out: Path, regime: str, benchmark: str, seed: int) -> dict | None:
    """The results of a (regime, benchmark, seed) job that has run, None if it has not."""
    path = job_dir(out, f"{regime}-{benchmark}", seed) / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def compact(result: dict) -> dict:
    """What the study reads from a run's results.json (a few kB of its ~30): the rest is the run's."""
    keep = ("best", "default", "part_recall", "curve")
    methods = {m: {k: r[k] for k in keep if k in r} for m, r in result["methods"].items()}
    return {"seed": result["seed"], "overrides": result.get("overrides"), "timings_s": result.get("timings_s"),
            "methods": methods}  # fmt: skip


def read_record(path: Path | None) -> dict[str, dict]:
    """The recorded runs by :func:`record_key`; none when there is no record (yet)."""
    if path is None or not path.is_file():
        return {}
    try:
        runs = json.loads(path.read_text())["runs"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        expected = '{"runs": {"<regime>-<benchmark>_seed<N>": {...}}}'
        raise SystemExit(f"{path}: not a regimes record ({err!r}); expected {expected}, as regimes.py --record writes")
    return runs


def record_key(regime: str, benchmark: str, seed: int) -> str:
    return job_dir(Path(), f"{regime}-{benchmark}", seed).name


def write_record(path: Path, runs: dict[str, dict]) -> None:
    """Every recorded run, the new ones merged in, sorted by key; written whole, then moved into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"runs": dict(sorted(runs.items()))}, indent=1) + "\n")
    tmp.replace(path)


def signed(values: list[float]) -> str:
    """A difference over seeds: mean ± std (min–max), each signed."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):+.1f} ± {std:.1f} ({min(values):+.1f} to {max(values):+.1f})"


def point(result: dict, threshold: float | None) -> tuple[float, dict]:
    """A method's seed mIoU and part recalls at its best threshold, or at ``threshold`` (the curve
    point: comparing methods at one threshold separates their maps from their best thresholds)."""
    if threshold is None:
        return result["best"]["miou"], result.get("part_recall") or {}
    on_curve = [p for p in result["curve"] if math.isclose(p["threshold"], threshold, abs_tol=1e-9)]
    if not on_curve:
        raise SystemExit(f"--threshold {threshold} is not on the curve: {[p['threshold'] for p in result['curve']]}")
    return on_curve[0]["miou"], on_curve[0].get("part_recall") or {}


def rows(regime: str, benchmark: str, runs: list[dict], threshold: float | None = None) -> list[str]:
    """Markdown rows of one cell: a method per row, numbers over the seeds' runs."""
    out = []
    for m in METHODS:
        if m not in runs[0]["methods"]:
            continue
        res = [point(r["methods"][m], threshold) for r in runs]
        miou = [x[0] for x in res]
        delta = [x[0] - point(r["methods"]["cam"], threshold)[0] for x, r in zip(res, runs)]
        recall = {p: [x[1].get(p) for x in res] for p in ("discriminative", "shared")}
        parts = [describe(v) if None not in v else "—" for v in recall.values()]
        d = "—" if m == "cam" else signed(delta)
        seeds = ", ".join(str(r["seed"]) for r in runs)
        out.append(f"| {regime} | {benchmark} | {seeds} | {m} | {describe(miou)} | {d} | {parts[0]} | {parts[1]} |")
    return out


def figure(cells: dict[tuple[str, str], list[dict]], path: Path, threshold: float | None = None) -> None:
    """Per cell: body recall and mIoU of CAM, official LPCAM and the max rule, side by side (seed
    means; the bars' whiskers span ± one standard deviation over the seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r}\n{b}" for r, b in cells]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.3 * len(cells) * 2), 4))
    for ax, (key, label) in zip(axes, [("shared", "recall of the bodies (%)"), ("miou", "seed mIoU (%)")]):
        no_parts = set()  # cells of a benchmark without a part map (digits): a label, not a bar
        for i, m in enumerate(("cam", "lpcam_official", "lpcam_max")):
            means, stds = [], []
            for j, runs in enumerate(cells.values()):
                res = [point(r["methods"][m], threshold) for r in runs]
                v = [x[0] if key == "miou" else x[1].get(key) for x in res]
                if None in v:
                    no_parts.add(j)
                    v = [math.nan]
                means.append(statistics.fmean(v))
                stds.append(statistics.stdev(v) if len(v) > 1 else 0.0)
            ax.bar([j + (i - 1) * 0.27 for j in range(len(cells))], means, width=0.27, yerr=stds, capsize=2, label=m)
        for j in no_parts:
            ax.text(j, 3, "no part map", ha="center", va="bottom", rotation=90, fontsize=8, color="0.4")
        ax.set_xticks(range(len(cells)), names, fontsize=8)
        ax.set_xlim(-0.6, len(cells) - 0.4)  # the same cells on both panels, drawn bars or not
        ax.set_ylabel(label)
        ax.set_ylim(0, 100)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("outputs/regimes"))
    parser.add_argument("--finished", action="store_true",
                        help="run nothing: the table and figure of the runs already finished (a cell with none is left out)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="read every method at this background threshold instead of its best (runs with per-threshold part recalls)")
    parser.add_argument("--record", type=Path, default=None,
                        help="a JSON record of the runs (e.g. docs/regimes_runs.json): cells whose run directories "
                             "are gone are read from it, and every run read is merged into it")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args(argv)
    recorded = read_record(args.record)
    cells: dict[tuple[str, str], list[dict]] = {}
    for benchmark in args.benchmarks:
        for regime in args.regimes:
            runs = []
            for seed in args.seeds:
                key = record_key(regime, benchmark, seed)
                if args.finished:
                    result = finished_cell(args.out, regime, benchmark, seed)
                    run = compact(result) if result is not None else recorded.get(key)
                else:
                    run = compact(run_cell(args.out, regime, benchmark, seed, args.overrides))
                if run is not None:
                    runs.append(run)
                    recorded[key] = run
            if runs:
                cells[regime, benchmark] = runs
    if not cells:
        where = f"under {args.out}" + (f" or in {args.record}" if args.record else "")
        raise SystemExit(f"no finished runs {where} for these regimes, benchmarks and seeds")
    if args.record is not None:
        write_record(args.record, recorded)
    at = "best-threshold" if args.threshold is None else f"threshold-{args.threshold} (every method)"
    lines = [
        f"{at} seed mIoU, mean ± std (min–max) over the seeds each cell lists",
        "",
        "| regime | benchmark | seeds | method | seed mIoU | Δ vs CAM | recall: heads | recall: bodies |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (regime, benchmark), runs in cells.items():
        lines += rows(regime, benchmark, runs, args.threshold)
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "regimes" if args.threshold is None else f"regimes_at_{args.threshold:g}"  # the best-threshold table stays
    (args.out / f"{stem}.md").write_text(text + "\n")
    figure(cells, args.out / f"{stem}.png", args.threshold)
    print(f"wrote {args.out / f'{stem}.md'} and {args.out / f'{stem}.png'}")


if __name__ == "__main__":
    main()
