"""experiments/regimes.py: the study's table and figure from finished runs (nothing is run here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import experiment_script


@pytest.fixture(scope="module")
def regimes():
    yield from experiment_script("regimes")


def fake_results(seed: int, cam: float, lpcam: float) -> dict:
    method = lambda miou, body: {"best": {"miou": miou}, "part_recall": {"discriminative": 90.0, "shared": body}}  # noqa: E731
    return {"seed": seed, "methods": {"cam": method(cam, 40.0), "lpcam_official": method(lpcam, 60.0 + seed),
                                      "lpcam_fg_only": method(cam - 1, 50.0), "lpcam_max": method(cam + 2, 55.0)}}  # fmt: skip


def test_finished_reads_only_the_runs_that_exist_and_draws_them(regimes, tmp_path, capsys):
    for seed, (cam, lp) in enumerate([(30.0, 40.0), (34.0, 41.0)]):
        run = tmp_path / f"frozen-one_body_192_seed{seed}"
        run.mkdir()
        (run / "results.json").write_text(json.dumps(fake_results(seed, cam, lp)))
    regimes.main(["--finished", "--out", str(tmp_path), "--regimes", "frozen", "scratch",
                  "--benchmarks", "one_body_192", "parts_192", "--seeds", "0", "1", "2"])  # fmt: skip
    text = (tmp_path / "regimes.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| frozen")]
    assert len(rows) == 4 and "scratch" not in text and "parts_192" not in text  # cells without runs left out
    lp = next(r for r in rows if "| lpcam_official |" in r)
    # seeds 0 and 1 only; mIoU 40.5 ± 0.7; Δ +10 and +7: +8.5 ± 2.1; bodies 60 and 61
    assert "| 0, 1 |" in lp and "40.5 ± 0.7" in lp and "+8.5 ± 2.1 (+7.0 to +10.0)" in lp and "60.5 ± 0.7" in lp
    assert (tmp_path / "regimes.png").stat().st_size > 10_000
    assert "wrote" in capsys.readouterr().out


def test_one_threshold_reads_every_method_at_that_curve_point(regimes, tmp_path, capsys):
    """Part recalls at each method's best threshold mix the maps with the thresholds; --threshold
    reads them all at one curve point, and leaves the best-threshold table alone."""
    results = fake_results(0, 30.0, 40.0)
    for m, res in results["methods"].items():  # CAM's heads 80 at 0.3, LPCAM's 70; 50 and 20 at 0.5
        heads = {"cam": (80.0, 50.0), "lpcam_official": (70.0, 20.0)}.get(m, (60.0, 10.0))
        res["curve"] = [{"threshold": t, "miou": res["best"]["miou"] - i, "part_recall": {"discriminative": h, "shared": 5.0}}
                        for i, (t, h) in enumerate(zip((0.3, 0.5), heads))]  # fmt: skip
    run = tmp_path / "frozen-one_body_192_seed0"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))
    argv = ["--finished", "--out", str(tmp_path), "--regimes", "frozen", "--benchmarks", "one_body_192", "--seeds", "0"]
    regimes.main([*argv, "--threshold", "0.5"])
    text = (tmp_path / "regimes_at_0.5.md").read_text()
    assert text.startswith("threshold-0.5 (every method) seed mIoU")
    lp = next(r for r in text.splitlines() if "| lpcam_official |" in r)
    cam = next(r for r in text.splitlines() if "| cam |" in r)
    assert "|  39.0 ± 0.0 (39.0–39.0) | +10.0 ± 0.0" in lp and "|  20.0 ± 0.0 (20.0–20.0) |" in lp
    assert "|  50.0 ± 0.0 (50.0–50.0) |" in cam
    assert not (tmp_path / "regimes.md").exists()
    with pytest.raises(SystemExit, match="not on the curve"):
        regimes.main([*argv, "--threshold", "0.4"])


def test_finished_with_nothing_finished_says_so(regimes, tmp_path):
    with pytest.raises(SystemExit, match="no finished runs under"):
        regimes.main(["--finished", "--out", str(tmp_path), "--regimes", "frozen", "--benchmarks", "parts_192"])


def test_every_cell_builds_prototypes_from_the_training_split(regimes, tmp_path, monkeypatch):
    """The measured cells built their prototypes from the training split; the study pins that, so
    a cell run after the default moved to the seed-evaluation split is the same protocol."""
    calls = []
    monkeypatch.setattr(regimes, "run_job", lambda out, name, seed, overrides: calls.append((name, seed, overrides)))
    regimes.run_cell(tmp_path, "frozen", "one_body_192", 1, ["trainer.max_epochs=1"])
    ((name, seed, overrides),) = calls
    assert (name, seed) == ("frozen-one_body_192", 1)
    assert "dataset.prototype_split=null" in overrides and overrides[-1] == "trainer.max_epochs=1"  # the user's last
    from tests.conftest import compose_config

    assert compose_config(overrides).dataset.prototype_split is None


def test_record_keeps_the_runs_and_fills_the_cells_whose_directories_are_gone(regimes, tmp_path):
    """The study page's table and figure are redrawn from a record of the runs: a run read once is
    kept (compacted) and later fills its cell when its directory is gone; a run directory that
    exists wins over the record."""
    record, out = tmp_path / "docs" / "regimes_runs.json", tmp_path / "runs"
    argv = ["--finished", "--out", str(out), "--record", str(record), "--regimes", "frozen",
            "--benchmarks", "one_body_192", "--seeds", "0", "1"]  # fmt: skip

    def write_run(seed: int, cam: float, lp: float) -> Path:
        results = fake_results(seed, cam, lp)
        results["methods"]["cam"]["per_class_iou"] = {"a": 1.0}  # the run's, not the study's
        run = out / f"frozen-one_body_192_seed{seed}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(results))
        return run

    first = write_run(0, 30.0, 40.0)
    regimes.main(argv)
    kept = json.loads(record.read_text())["runs"]
    assert list(kept) == ["frozen-one_body_192_seed0"]
    assert kept["frozen-one_body_192_seed0"]["methods"]["lpcam_official"]["best"]["miou"] == 40.0
    assert "per_class_iou" not in kept["frozen-one_body_192_seed0"]["methods"]["cam"]

    (first / "results.json").unlink()
    first.rmdir()
    write_run(1, 34.0, 41.0)
    regimes.main(argv)
    lp = next(r for r in (out / "regimes.md").read_text().splitlines() if "| lpcam_official |" in r)
    assert "| 0, 1 |" in lp and "+8.5 ± 2.1 (+7.0 to +10.0)" in lp  # seed 0 from the record, seed 1 from its run
    assert sorted(json.loads(record.read_text())["runs"]) == ["frozen-one_body_192_seed0", "frozen-one_body_192_seed1"]

    write_run(0, 30.0, 50.0)  # run again: its directory's results replace the recorded ones
    regimes.main(argv)
    assert json.loads(record.read_text())["runs"]["frozen-one_body_192_seed0"]["methods"]["lpcam_official"]["best"]["miou"] == 50.0
    assert not list(record.parent.glob("*.tmp"))


def test_a_record_that_is_not_one_is_named(regimes, tmp_path):
    record = tmp_path / "regimes_runs.json"
    record.write_text('{"cells": []}')
    with pytest.raises(SystemExit, match="regimes_runs.json: not a regimes record"):
        regimes.main(["--finished", "--out", str(tmp_path), "--record", str(record), "--regimes", "frozen"])
