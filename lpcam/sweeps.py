"""Reading a sweep directory back: every job's results.json (or error.json), as tables and plots.

A Hydra multirun writes one folder per job (``<sweep dir>/<job number>/``) holding the job's
``results.json`` (lpcam/results.py) and ``.hydra/overrides.yaml``; a failed job holds
``error.json`` instead (lpcam/run.py). :func:`sweep_report` turns those into ``report.md`` and PNG
plots, so a sweep can be compared without W&B.

Jobs that differ only in a *replicate* setting (``REPLICATES``: the training seed and the
prototype draw, ``lpcam.seed``) are repeats of one configuration, so the report groups them and
gives each method's mean ± standard deviation, min–max and n over the group, and its difference
to CAM paired job by job (each job's CAM comes from the same classifier as its LPCAM). A single
draw of LPCAM says little: on the embedded benchmark one classifier's official-protocol draws
span 5 points.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402  (PyYAML comes with omegaconf)

from lpcam.results import upgrade  # noqa: E402


@dataclass
class Job:
    """One job of a sweep: where it ran, its overrides, and its results or its error."""

    path: Path
    overrides: list[str]
    results: dict | None = None
    error: dict | None = None
    settings: dict[str, str] = field(default_factory=dict)  # the overrides that differ across jobs

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items()) or self.path.name

    @property
    def seconds(self) -> float:
        return sum(self.results["timings_s"].values()) if self.results else 0.0


REPLICATES = ("seed", "lpcam.seed")  # overrides that redraw a configuration rather than change it


@dataclass
class Group:
    """The finished jobs of a sweep that share every setting but the replicate ones (``over``)."""

    settings: dict[str, str]
    jobs: list[Job]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items()) or "all jobs"


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (0 for one value), min, max and count of some values."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, min(values), max(values), len(values))

    def __str__(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f}"

    def signed(self) -> str:
        return f"{self.mean:+.1f} ± {self.std:.1f}"

    def range(self, signed: bool = False) -> str:
        f = "{:+.1f}" if signed else "{:.1f}"
        return f"{f.format(self.low)} to {f.format(self.high)}" if signed else f"{f.format(self.low)}–{f.format(self.high)}"


def group_jobs(jobs: list[Job], over: tuple[str, ...] | list[str] = REPLICATES) -> list[Group]:
    """The finished jobs grouped by their varying settings other than ``over``, in job order."""
    groups: dict[tuple, Group] = {}
    for job in jobs:
        if job.results is None:
            continue
        settings = {k: v for k, v in job.settings.items() if k not in over}
        groups.setdefault(tuple(settings.items()), Group(settings, [])).jobs.append(job)
    return list(groups.values())


def method_spreads(group: Group) -> dict[str, dict[str, Spread]]:
    """Per method of the group (in the first job's order): ``miou`` (best threshold), ``delta``
    (the method minus CAM, job by job; absent for CAM itself), ``default`` (mIoU at the default
    threshold), ``precision`` and ``recall`` (at the best threshold), each over the group's jobs
    that have the method."""
    methods = list(dict.fromkeys(m for j in group.jobs for m in j.results["methods"]))
    out: dict[str, dict[str, Spread]] = {}
    for m in methods:
        having = [j.results["methods"] for j in group.jobs if m in j.results["methods"]]
        row = {
            "miou": Spread.of([r[m]["best"]["miou"] for r in having]),
            "default": Spread.of([r[m]["default"]["miou"] for r in having]),
            "precision": Spread.of([r[m]["best"]["precision"] for r in having]),
            "recall": Spread.of([r[m]["best"]["recall"] for r in having]),
        }
        paired = [r[m]["best"]["miou"] - r["cam"]["best"]["miou"] for r in having if "cam" in r]
        if m != "cam" and paired:
            row["delta"] = Spread.of(paired)
        for part in ("discriminative", "shared"):  # where the dataset has part maps
            recalls = [r[m]["part_recall"][part] for r in having if (r[m].get("part_recall") or {}).get(part) is not None]
            if recalls:
                row[part] = Spread.of(recalls)
        out[m] = row
    return out


def summary_table(groups: list[Group]) -> str:
    """Markdown: group × method, each a mean ± std over the group's jobs (n of them); the part
    recalls (heads and bodies of the generated benchmarks) where the jobs have them."""
    rows = [(g, m, r) for g in groups for m, r in method_spreads(g).items()]
    parts = any("shared" in r for _, _, r in rows)
    head = "| settings | method | n | mIoU (best thr.) | min–max | Δ vs CAM (paired) | Δ min–max | mIoU @ default | precision | recall |"
    lines = [head + (" recall: discriminative | recall: shared |" if parts else ""), "|---" * (10 + 2 * parts) + "|"]
    for group, method, row in rows:
        delta = row.get("delta")
        d, dr = (delta.signed(), delta.range(signed=True)) if delta else ("—", "—")
        m = row["miou"]
        line = (
            f"| {group.label} | {method} | {m.n} | {m} | {m.range()} | {d} | {dr} | {row['default']} "
            f"| {row['precision']} | {row['recall']} |"
        )
        if parts:
            line += f" {row.get('discriminative', '—')} | {row.get('shared', '—')} |"
        lines.append(line)
    return "\n".join(lines)


def plot_group_means(groups: list[Group], path: Path) -> Path:
    """Each group's best-threshold mIoU per method, the bar its mean and the whisker its std."""
    per_group = [method_spreads(g) for g in groups]  # once per group, not once per method and group
    methods = list(dict.fromkeys(m for spreads in per_group for m in spreads))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(groups) * len(methods) ** 0.5), 4.0))
    for i, m in enumerate(methods):
        spreads = [g.get(m, {}).get("miou") for g in per_group]
        xs = [x + i * width for x, s in enumerate(spreads) if s]
        ax.bar(xs, [s.mean for s in spreads if s], width, yerr=[s.std for s in spreads if s], capsize=3, label=m)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))], [g.label for g in groups], rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="seed mIoU, best threshold (mean ± std)", title="mIoU over replicates")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _job_number(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 30, path.name)


def read_sweep(sweep_dir: str | Path) -> list[Job]:
    """The sweep's jobs in job order; each job's ``settings`` are the overrides that vary."""
    sweep_dir = Path(sweep_dir)
    folders = {p.parent for p in sweep_dir.glob("*/results.json")} | {p.parent for p in sweep_dir.glob("*/error.json")}
    if not folders:
        raise FileNotFoundError(f"{sweep_dir}: no job folder with a results.json or error.json (is it a sweep directory?)")
    jobs = []
    for folder in sorted(folders, key=_job_number):
        overrides_file = folder / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        results = folder / "results.json"
        error = folder / "error.json"
        jobs.append(
            Job(
                folder,
                list(overrides or []),
                upgrade(json.loads(results.read_text())) if results.is_file() else None,
                json.loads(error.read_text()) if error.is_file() and not results.is_file() else None,
            )
        )
    parsed = [dict(o.split("=", 1) for o in job.overrides if "=" in o) for job in jobs]
    varying = [k for k in dict.fromkeys(k for p in parsed for k in p) if len({p.get(k) for p in parsed}) > 1]
    for job, p in zip(jobs, parsed):
        job.settings = {k: p.get(k, "(default)") for k in varying}
    return jobs


def markdown_table(jobs: list[Job]) -> str:
    """Job settings / method × best-threshold seed metrics, mIoU at the default threshold, time."""
    lines = [
        "| settings | method | mIoU | thr. | FP | FN | precision | recall | mIoU @ default | job time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for job in jobs:
        if job.results is None:
            continue
        for method, r in job.results["methods"].items():
            b, d = r["best"], r["default"]
            lines.append(
                f"| {job.label} | {method} | {b['miou']:.1f} | {b['threshold']:.2f} | {b['fp']:.1f} | {b['fn']:.1f} "
                f"| {b['precision']:.1f} | {b['recall']:.1f} | {d['miou']:.1f} | {job.seconds:.0f} |"
            )
    return "\n".join(lines)


def failures_section(jobs: list[Job]) -> str:
    failed = [j for j in jobs if j.results is None]
    if not failed:
        return ""
    lines = ["## Failed jobs", "", "| job | settings | error (the job's error.json and log have the rest) |", "|---|---|---|"]
    for job in failed:
        message = (job.error or {}).get("error", "no results.json and no error.json (interrupted?)")
        lines.append(f"| {job.path.name} | {job.label} | {message.replace('|', '/')} |")
    return "\n".join(lines)


def _setting(job: Job, key: str):
    return job.results["prototypes"]["settings"].get(key)


def _primary_miou(job: Job) -> float:
    """The best seed mIoU of the job's configured LPCAM rule."""
    return job.results["methods"][job.results["primary_method"]]["best"]["miou"]


def plot_miou_vs_k(jobs: list[Job], path: Path) -> Path | None:
    """LPCAM's best mIoU against K, one line per aggregation rule (mean ± std over the jobs that
    share K and the rule, e.g. seeds), CAM's mean as a reference line. None if K did not vary."""
    done = [j for j in jobs if j.results]
    if len({_setting(j, "k") for j in done}) < 2:
        return None
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for j in done:
        series[j.results["aggregation"]][_setting(j, "k")].append(_primary_miou(j))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for rule, by_k in sorted(series.items()):
        ks = sorted(by_k)
        means = [statistics.fmean(by_k[k]) for k in ks]
        stds = [statistics.stdev(by_k[k]) if len(by_k[k]) > 1 else 0.0 for k in ks]
        ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=f"LPCAM ({rule})")
    cam = statistics.fmean(j.results["methods"]["cam"]["best"]["miou"] for j in done)
    ax.axhline(cam, color="grey", linestyle="--", label="CAM")
    ax.set_xticks(sorted({k for by_k in series.values() for k in by_k}))  # K is a whole number
    ax.set(xlabel="K (k-means centres per class)", ylabel="seed mIoU (best threshold)", title="mIoU vs K")
    ax.legend(fontsize=8)
    return _save(fig, path)


def best_job(jobs: list[Job]) -> Job | None:
    done = [j for j in jobs if j.results]
    return max(done, key=_primary_miou) if done else None


def plot_threshold_curves(job: Job, path: Path) -> Path:
    """mIoU against the background threshold, one line per method, for one job."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method, r in job.results["methods"].items():
        ax.plot([p["threshold"] for p in r["curve"]], [p["miou"] for p in r["curve"]], label=method, lw=1.5)
    ax.set(xlabel="background threshold", ylabel="seed mIoU", title=f"mIoU vs threshold ({job.label})")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_per_class_iou(job: Job, path: Path) -> Path:
    """Per-class IoU, methods side by side, for one job."""
    methods = list(job.results["methods"])
    classes = list(job.results["methods"][methods[0]]["per_class_iou"])
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.6 * len(classes) * len(methods) ** 0.5), 3.8))
    for i, m in enumerate(methods):
        values = [job.results["methods"][m]["per_class_iou"][c] for c in classes]
        ax.bar([x + i * width for x in range(len(classes))], values, width, label=m)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(classes))], classes, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="IoU (best threshold)", title=f"per-class IoU ({job.label})")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    jobs: list[Job] | None = None,
    over: tuple[str, ...] | list[str] = REPLICATES,
) -> Path:
    """Write ``report.md`` and its plots (into ``out_dir``, default the sweep directory), from
    ``jobs`` when the caller has already read the sweep. Jobs repeated over the ``over``
    settings are summarised first (when some group has more than one job)."""
    jobs = jobs if jobs is not None else read_sweep(sweep_dir)
    out = Path(out_dir or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = [j for j in jobs if j.results]
    parts = [
        f"# Sweep report: {Path(sweep_dir)}",
        "",
        f"{len(done)} of {len(jobs)} jobs finished"
        + (f"; varying: {', '.join(jobs[0].settings)}" if jobs[0].settings else "")
        + ". mIoU, FP, FN, precision and recall (%) at each method's best background threshold.",
        "",
    ]
    groups = group_jobs(jobs, over)
    images = []
    if any(len(g.jobs) > 1 for g in groups):
        repeated = [k for k in over if k in (jobs[0].settings if jobs else {})]
        parts += [
            f"## Mean over {', '.join(repeated)}",
            "",
            f"Jobs that differ only in {' or '.join(repeated)} as one row: mean ± standard deviation over the "
            "n jobs, and each method's difference to CAM paired job by job (the same classifier).",
            "",
            summary_table(groups),
            "",
            "![mIoU over replicates](miou_by_group.png)",
            "",
            "## Every job",
            "",
        ]
        plot_group_means(groups, out / "miou_by_group.png")
    parts += [markdown_table(jobs), ""]
    if (p := plot_miou_vs_k(jobs, out / "miou_vs_k.png")) is not None:
        images.append(("mIoU vs K per aggregation rule", p))
    if (best := best_job(jobs)) is not None:
        images.append((f"mIoU vs background threshold per method (best LPCAM job: {best.label})", plot_threshold_curves(best, out / "miou_vs_threshold.png")))
        images.append((f"per-class IoU (best LPCAM job: {best.label})", plot_per_class_iou(best, out / "per_class_iou.png")))
    for title, p in images:
        parts += [f"## {title}", "", f"![{title}]({p.name})", ""]
    if failures := failures_section(jobs):
        parts += [failures, ""]
    report = out / "report.md"
    report.write_text("\n".join(parts))
    return report
