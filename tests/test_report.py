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
