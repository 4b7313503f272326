"""experiments/official_protocol.py: the decomposition table is made from the jobs' figures."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml

from tests.conftest import experiment_script


@pytest.fixture
def script():
    yield from experiment_script("official_protocol")


def write_job(folder, overrides, seed, draw, cam, lpcam):
    curve = lambda v: [{"threshold": 0.25, "miou": v - 2}, {"threshold": 0.3, "miou": v - 1}]  # noqa: E731
    method = lambda v: {"best": {"miou": v, "threshold": 0.4, "precision": 0, "recall": 0, "fp": 0, "fn": 0},  # noqa: E731
                        "default": {"miou": v - 1, "threshold": 0.3}, "curve": curve(v), "per_class_iou": {}}
    results = {"schema": 2, "dataset": "synthetic_parts", "split": "train", "backbone": "b", "seed": seed,
               "methods": {"cam": method(cam), "lpcam_official": method(lpcam)}, "primary_method": "lpcam_official",
               "aggregation": "official", "prototypes": {"settings": {"seed": draw, "k": 12}},
               "overrides": overrides, "timings_s": {}}  # fmt: skip
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "results.json").write_text(json.dumps(results))


def test_the_table_gives_means_over_draws_and_differences_to_the_preset(script, tmp_path, capsys):
    figures = {  # (row, classifier seed, draw): official LPCAM best
        ("none", 0, 0): 55.0, ("none", 0, 1): 59.0, ("none", 1, 0): 60.0, ("none", 1, 1): 62.0,
        ("rescale", 0, 0): 53.0, ("rescale", 0, 1): 55.0, ("rescale", 1, 0): 58.0, ("rescale", 1, 1): 58.0,
    }  # fmt: skip
    sweep = tmp_path / "decomposition"
    for n, ((row, seed, draw), value) in enumerate(figures.items()):
        write_job(sweep / str(n), [f"revert={row}", f"seed={seed}", f"lpcam.seed={draw}"], seed, draw, 50.0 + seed, value)
    defaults = tmp_path / "draws"
    for n, (seed, draw) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        write_job(defaults / str(n), [f"seed={seed}", f"lpcam.seed={draw}", "study=draws"], seed, draw, 50.0 + seed, 54.0 + draw)
    official = tmp_path / "official.json"
    official.write_text(json.dumps({"cam": {"best": 50.0, "threshold": 0.05, "at_0.3": 48.0},
                                    "draw0": {"best": 56.0, "threshold": 0.35, "at_0.3": 54.0},
                                    "draw1": {"best": 58.0, "threshold": 0.45, "at_0.3": 55.0}}))  # fmt: skip
    record = tmp_path / "record.json"
    script.main(["--sweep", str(sweep), "--sweep", str(defaults), "--official", f"0={official}", "--record", str(record)])
    table = capsys.readouterr().out
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert list(rows) == [script.ROWS[r] for r in (script.OFFICIAL, script.PRESET, "rescale", script.DEFAULTS)]
    preset = rows[script.ROWS[script.PRESET]]
    assert "| 57.0 ± 2.8 (55.0–59.0, 2) | 61.0 ± 1.4 (60.0–62.0, 2) | — |" in preset
    # rescale: means 54.0 and 58.0 against the preset's 57.0 and 61.0: -3.0 on both classifiers
    assert "| 54.0 ± 1.4 (53.0–55.0, 2) | 58.0 ± 0.0 (58.0–58.0, 2) | -3.0 |" in rows[script.ROWS["rescale"]]
    assert f"| {statistics.fmean([52.0, 54.0, 57.0, 57.0]):.1f} |" in rows[script.ROWS["rescale"]]  # @0.3: best - 1 here
    assert "| 50.0 / 49.0 · 51.0 / 50.0 |" in preset  # CAM per classifier, best / @0.3
    assert "| 57.0 ± 1.4 (56.0–58.0, 2) | — | +0.0 |" in rows[script.ROWS[script.OFFICIAL]]
    assert "| 54.5 ± 0.7 (54.0–55.0, 2) | 54.5 ± 0.7 (54.0–55.0, 2) | -4.5 |" in rows[script.ROWS[script.DEFAULTS]]
    # the record remakes the table alone, and a job run again replaces its entry
    assert len(json.loads(record.read_text())) == 8 + 4 + 2
    script.main(["--record", str(record)])
    assert capsys.readouterr().out == table
