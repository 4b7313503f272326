"""The terminal summary and the flat metrics sent to loggers."""

from lpcam.report import format_summary
from lpcam.results import summary_metrics


def _results():
    m = {"threshold": 0.3, "miou": 50.0, "fp": 20.0, "fn": 30.0, "precision": 60.0, "recall": 70.0}
    method = {"best": m, "default": {**m, "threshold": 0.15, "miou": 40.0}, "per_class_iou": {},
              "part_recall": {"discriminative": 90.0, "shared": 60.0}, "curve": []}  # fmt: skip
    return {
        "dataset": "d", "split": "train", "backbone": "b", "seed": 0,
        "methods": {"cam": method, "lpcam_official": method}, "primary_method": "lpcam_official",
        "prototypes": {"counts": {"a": {"class": 3, "context": 2}, "b": {"class": 1, "context": 0}},
                       "halo_share": {"a": 0.2, "b": 0.4}},
        "timings_s": {"train": 1.0}, "peak_memory_mb": 10.0,
    }  # fmt: skip


def test_summary_metrics_flatten_methods_counts_and_halo():
    flat = summary_metrics(_results())
    assert flat["lpcam_official/best_miou"] == 50.0 and flat["cam/default_miou"] == 40.0
    assert flat["lpcam_official/part_recall_shared"] == 60.0
    assert flat["prototypes/class"] == 4 and flat["prototypes/context"] == 2
    assert abs(flat["prototypes/halo_share"] - 0.3) < 1e-12 and flat["time/train"] == 1.0


def test_format_summary_has_a_row_per_method():
    text = format_summary(_results())
    assert "cam" in text and "lpcam_official" in text and "shared 60.0" in text and "50.0" in text


def test_schema_1_results_are_read_in_schema_2_terms():
    from lpcam.results import SCHEMA, upgrade

    m = _results()["methods"]["cam"]
    old = {
        "schema": 1, "dataset": "d", "methods": {"cam": m, "lpcam": m, "lpcam_fg_only": m},
        "lpcam": {"k": 12, "tau": 0.1, "mu_fg": 0.9, "mu_bg": 0.9, "aggregation": "max",
                  "prototypes": {"a": {"class": 3, "context": 2}}, "halo_share": {"a": 0.2}},
    }  # fmt: skip
    new = upgrade(old)
    assert new["schema"] == SCHEMA == 2 and "lpcam" not in new
    assert list(new["methods"]) == ["cam", "lpcam_max", "lpcam_fg_only"] and new["primary_method"] == "lpcam_max"
    assert new["prototypes"]["settings"]["k"] == 12 and new["prototypes"]["counts"] == {"a": {"class": 3, "context": 2}}
    assert upgrade(new) is new


# ------------------------------------------------------------------ sweep reports over replicates


def _write_job(folder, overrides, cam, lpcam):
    import json

    import yaml

    results = _results()
    m = results["methods"]["cam"]
    results.update(schema=2, aggregation="official", prototypes={"settings": {"k": 4}, "counts": {}})
    results["methods"] = {
        "cam": {**m, "best": {**m["best"], "miou": cam}},
        "lpcam_official": {**m, "best": {**m["best"], "miou": lpcam}, "default": {**m["default"], "miou": lpcam - 1}},
    }
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "results.json").write_text(json.dumps(results))


def test_a_sweep_over_draws_is_summarised_by_mean_std_and_the_paired_difference(tmp_path):
    """Jobs differing only in the training seed or the prototype draw are one row: the numbers are
    those computed from the results.json files by hand."""
    import statistics

    from lpcam.sweeps import group_jobs, method_spreads, read_sweep, sweep_report

    figures = {  # (lpcam.k, seed, lpcam.seed): (cam, lpcam_official)
        (4, 0, 0): (50.0, 52.0), (4, 0, 1): (50.0, 55.0), (4, 1, 0): (60.0, 57.0), (4, 1, 1): (60.0, 61.0),
        (8, 0, 0): (50.0, 49.0), (8, 0, 1): (50.0, 50.5), (8, 1, 0): (60.0, 58.0), (8, 1, 1): (60.0, 63.0),
    }  # fmt: skip
    for n, ((k, seed, draw), (cam, lp)) in enumerate(figures.items()):
        _write_job(tmp_path / str(n), [f"lpcam.k={k}", f"seed={seed}", f"lpcam.seed={draw}"], cam, lp)
    jobs = read_sweep(tmp_path)
    groups = group_jobs(jobs)
    assert [g.settings for g in groups] == [{"lpcam.k": "4"}, {"lpcam.k": "8"}]
    for group, k in zip(groups, (4, 8)):
        mine = [v for (kk, _, _), v in figures.items() if kk == k]
        row = method_spreads(group)
        lp = [b for _, b in mine]
        assert row["lpcam_official"]["miou"].mean == statistics.fmean(lp)
        assert row["lpcam_official"]["miou"].std == statistics.stdev(lp) and row["lpcam_official"]["miou"].n == 4
        paired = [b - a for a, b in mine]
        assert row["lpcam_official"]["delta"].mean == statistics.fmean(paired)
        assert row["lpcam_official"]["delta"].std == statistics.stdev(paired)
        assert "delta" not in row["cam"] and row["cam"]["miou"].std == statistics.stdev([a for a, _ in mine])
    # only the draws as repeats: one group per (k, seed), two jobs each
    by_classifier = group_jobs(jobs, over=["lpcam.seed"])
    assert [len(g.jobs) for g in by_classifier] == [2, 2, 2, 2]
    assert method_spreads(by_classifier[0])["lpcam_official"]["miou"].mean == 53.5
    text = sweep_report(tmp_path).read_text()
    assert "## Mean over seed, lpcam.seed" in text
    assert "| lpcam.k=4 | lpcam_official | 4 | 56.2 ± 3.8 | 52.0–61.0 | +1.2 ± 3.3 | -3.0 to +5.0 |" in text
    assert (tmp_path / "miou_by_group.png").stat().st_size > 5_000
    assert "## Mean over" not in sweep_report(tmp_path, tmp_path / "flat", over=[]).read_text()  # every job alone
