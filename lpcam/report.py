"""A terminal summary of one run's results.json."""

from __future__ import annotations


def format_summary(results: dict) -> str:
    """A small table a researcher reads at the end of a run: methods × seed metrics."""
    head = f"{'method':<20}{'thr':>6}{'mIoU':>8}{'FP':>7}{'FN':>7}{'prec':>7}{'rec':>7}{'@def':>8}"
    lines = [f"{results['dataset']} / {results['split']} / {results['backbone']} / seed {results['seed']}", head]
    for method, r in results["methods"].items():
        b, d = r["best"], r["default"]
        line = f"{method:<20}{b['threshold']:>6.2f}{b['miou']:>8.1f}{b['fp']:>7.1f}{b['fn']:>7.1f}{b['precision']:>7.1f}{b['recall']:>7.1f}{d['miou']:>8.1f}"
        if "part_recall" in r:
            pr = r["part_recall"]
            line += f"   part recall: discriminative {pr['discriminative']:.1f}, shared {pr['shared']:.1f}"
        lines.append(line)
    lines.append("(thr = best background threshold; @def = mIoU at the default threshold)")
    t = results["timings_s"]
    lines.append("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + f"; peak memory {results['peak_memory_mb']:.0f} MB")
    return "\n".join(lines)


def print_summary(results: dict) -> None:
    print(format_summary(results))
