"""The official protocol against lpcam's defaults, decomposed, as means over prototype draws.

    lpcam -m study=official_decomposition                  # the preset and each difference switched back
    lpcam -m study=draws seed=0,1                          # lpcam's defaults, the same draws
    python experiments/official_protocol.py --sweep multirun/<decomposition> --sweep multirun/<draws> \\
        --official 0=official_seed0.json --record docs/official_protocol_runs.json
    python experiments/official_protocol.py --record docs/official_protocol_runs.json   # the table again

Each job of the sweeps is one prototype draw (``lpcam.seed``) of one classifier (``seed``) under one
row: ``revert=<name>`` (the preset with that difference switched back, ``none`` for the preset),
or ``lpcam's defaults`` for a job without ``lpcam=official_protocol``. ``--official SEED=FILE`` adds
the draws of the official code itself, run outside lpcam on the same classifier (a JSON of
``{"draw<d>": {"best": ..., "threshold": ..., "at_0.3": ...}}``). ``--record`` keeps every job's
figures in one JSON file, merged job by job, and the table is made from it, so it can be remade
without the run directories.

The table gives, per row and classifier, official LPCAM's best-threshold mIoU as mean ± std
(min–max) over the draws, and its difference to the preset's mean on the same classifier
averaged over the classifiers; CAM's mIoU beside it (it does not depend on the draw).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Sequence

from lpcam.sweeps import Spread, read_sweep

METHODS = ("cam", "lpcam_official", "lpcam_fg_only", "lpcam_max")
PRESET = "the preset"
DEFAULTS = "lpcam's defaults"
FORMER = "lpcam's former defaults"
OFFICIAL = "the official code"
ROWS = {  # row name in the record -> what it is, in the table
    OFFICIAL: "the official code itself (`step/make_lpcam.py`), run on the same classifier and images",
    PRESET: "`lpcam=official_protocol`",
    "rescale": "... with lpcam's rescale: the tensor resized bilinearly (CAM's too)",
    "split_cam": "... with lpcam's split CAM: scale 1 with its flip, on the feature grid",
    "kmeans_init": "... with k-means++ seeding instead of random rows",
    "kmeans_stop": "... with lpcam's k-means stop: relative shift < 1e-4, at most 100 iterations",
    "kmeans_rng": "... with its random rows drawn by torch instead of numpy (the same distribution)",
    "tau_ties": "... with positions at exactly τ put in the background",
    DEFAULTS: "lpcam's defaults (`lpcam=default`): the preset with the split CAM at one scale on the feature grid, torch's draws, a 300-iteration cap, the best centre kept",
    FORMER: "lpcam's defaults before this study: k-means++, relative stop, 20,000 features a side, the tensor rescaled",
}


def job_record(job) -> dict:
    """What the table needs of one finished job."""
    r = job.results
    overrides = dict(o.split("=", 1) for o in r.get("overrides", []) if "=" in o)
    preset = "revert" in overrides or overrides.get("lpcam") == "official_protocol"
    former = r["prototypes"]["settings"].get("kmeans_init") == "kmeans++"  # the k-means++ of lpcam's earlier defaults
    row = overrides.get("revert", "none") if preset else (FORMER if former else DEFAULTS)
    return {
        "row": PRESET if row == "none" else row,
        "dataset": r["dataset"],
        "seed": int(r["seed"]),
        "draw": int(r["prototypes"]["settings"]["seed"]),
        **{m: {"best": r["methods"][m]["best"]["miou"], "threshold": r["methods"][m]["best"]["threshold"],
               "at_0.3": point(r["methods"][m]["curve"], 0.3)} for m in METHODS if m in r["methods"]},
    }  # fmt: skip


def point(curve: list[dict], threshold: float) -> float | None:
    """The mIoU of a curve at a threshold (None when it was not scored there)."""
    return next((p["miou"] for p in curve if abs(p["threshold"] - threshold) < 1e-9), None)


def official_records(seed: int, path: Path, dataset: str = "synthetic_parts") -> list[dict]:
    """The draws of the official code on classifier ``seed``, as records."""
    data = json.loads(Path(path).read_text())
    return [
        {"row": OFFICIAL, "dataset": dataset, "seed": seed, "draw": int(key.removeprefix("draw")),
         "lpcam_official": {"best": v["best"], "threshold": v["threshold"], "at_0.3": v["at_0.3"]},
         **({"cam": {"best": data["cam"]["best"], "threshold": data["cam"]["threshold"], "at_0.3": data["cam"]["at_0.3"]}}
            if "cam" in data else {})}
        for key, v in data.items() if key.startswith("draw")
    ]  # fmt: skip


def merge(record: list[dict], new: list[dict]) -> list[dict]:
    """The record with ``new`` jobs added, a job (row, dataset, seed, draw) replacing its earlier entry."""
    key = lambda r: (r["row"], r["dataset"], r["seed"], r["draw"])  # noqa: E731
    merged = {key(r): r for r in record}
    merged.update({key(r): r for r in new})
    return sorted(merged.values(), key=lambda r: (list(ROWS).index(r["row"]) if r["row"] in ROWS else 99, *key(r)[1:]))


def table(record: list[dict], dataset: str = "synthetic_parts", method: str = "lpcam_official") -> str:
    """Markdown: row × classifier, ``method``'s best mIoU over the draws and its Δ to the preset."""
    runs = [r for r in record if r["dataset"] == dataset and method in r]
    seeds = sorted({r["seed"] for r in runs if r["row"] == PRESET})
    rows = [name for name in ROWS if any(r["row"] == name for r in runs)]

    def values(row: str, seed: int, m: str = method, key: str = "best") -> list[float]:
        return [r[m][key] for r in runs if r["row"] == row and r["seed"] == seed and m in r and r[m][key] is not None]

    head = " | ".join(f"classifier {s}: best (n)" for s in seeds)
    lines = [f"| row | {head} | Δ vs the preset | @0.3 | CAM best / @0.3 |", "|---|" + "---|" * (len(seeds) + 3)]
    for row in rows:
        cells, deltas, at = [], [], []
        for s in seeds:
            v = values(row, s)
            if not v:
                cells.append("—")
                continue
            spread = Spread.of(v)
            cells.append(f"{spread} ({spread.range()}, {spread.n})")
            at += values(row, s, key="at_0.3")
            if row != PRESET and values(PRESET, s):
                deltas.append(spread.mean - statistics.fmean(values(PRESET, s)))
        delta = "—" if row == PRESET or not deltas else f"{statistics.fmean(deltas):+.1f}"
        cam = " · ".join(
            f"{statistics.fmean(values(row, s, 'cam')):.1f} / {statistics.fmean(values(row, s, 'cam', 'at_0.3')):.1f}"
            for s in seeds if values(row, s, "cam")
        )  # fmt: skip
        at_cell = f"{statistics.fmean(at):.1f}" if at else "—"
        lines.append(f"| {ROWS[row]} | {' | '.join(cells)} | {delta} | {at_cell} | {cam or '—'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", type=Path, action="append", default=[], help="a multirun directory (repeatable)")
    parser.add_argument("--official", action="append", default=[], metavar="SEED=FILE", help="the official code's draws")
    parser.add_argument("--record", type=Path, help="the JSON record: merged with the sweeps, read for the table")
    parser.add_argument("--dataset", default="synthetic_parts")
    parser.add_argument("--method", default="lpcam_official", choices=METHODS[1:])
    args = parser.parse_args(argv)
    record = json.loads(args.record.read_text()) if args.record and args.record.is_file() else []
    new = [job_record(j) for sweep in args.sweep for j in read_sweep(sweep) if j.results]
    for item in args.official:
        seed, path = item.split("=", 1)
        new += official_records(int(seed), Path(path), args.dataset)
    record = merge(record, new)
    if args.record and new:
        args.record.write_text(json.dumps(record, indent=1) + "\n")
    print(table(record, args.dataset, args.method))


if __name__ == "__main__":
    main()
