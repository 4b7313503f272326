"""Multiruns as a user launches them: parallel jobs sharing one classifier, W&B groups, the report,
and a failing job that does not stop the others."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lpcam.sweeps import read_sweep, sweep_report
from tests.conftest import RESUMABLE, TINY
from tests.faults import finish, start, wait_for, wait_for_text
from tests.wandb_records import read_run

ROOT = Path(__file__).resolve().parents[1]


def multirun(tmp_path: Path, *overrides: str, sweep: str = "sweep") -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}
    env.pop("WANDB_API_KEY", None)
    cmd = [
        sys.executable, "-m", "lpcam.run", "-m", *TINY, f"data_dir={tmp_path / 'data'}",
        f"cache.dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / sweep}", *overrides,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_parallel_k_by_aggregation_sweep_trains_once_and_groups_its_wandb_runs(tmp_path):
    proc = multirun(tmp_path, "hydra/launcher=parallel", "logger=wandb", "lpcam.k=2,3", "lpcam/aggregation=official,max")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert len(results) == 4
    assert {(r["prototypes"]["settings"]["k"], r["aggregation"]) for r in results} == {(2, "official"), (2, "max"), (3, "official"), (3, "max")}
    # one classifier for the whole sweep: trained by one job, loaded from the cache by the others
    assert sum(r["timings_s"]["train"] > 0 for r in results) == 1
    assert len(list((tmp_path / "cache" / "classifiers").glob("*/best.ckpt"))) == 1
    assert len({json.dumps(r["methods"]["cam"]["curve"]) for r in results}) == 1  # the same CAMs
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 1  # features extracted once
    # W&B: one offline run per stage of each job, all in the sweep's group, named by overrides
    runs = [read_run(p) for p in sweep.glob("*/wandb/offline-run-*")]
    evaluate = [r for r in runs if r.job_type == "evaluate"]
    assert len(evaluate) == 4 and len({r.id for r in evaluate}) == 4
    assert [r.job_type for r in runs].count("train") == 1
    assert {r.group for r in runs} == {str(sweep)}
    assert {r.name for r in evaluate} == {f"lpcam.k={k},lpcam/aggregation={a}" for k in (2, 3) for a in ("official", "max")}
    assert all(r.exit_code == 0 for r in runs)
    # the report: the table (jobs x methods: CAM, the job's rule and the compare_rules fg_only and
    # max, where max is the job's rule in two jobs: 4 + 4 + 3 + 3 rows) and three plots
    report = sweep_report(sweep)
    text = report.read_text()
    assert text.count("| lpcam.k=") == 14 and "4 of 4 jobs finished" in text
    for png in ("miou_vs_k.png", "miou_vs_threshold.png", "per_class_iou.png"):
        assert (sweep / png).stat().st_size > 5_000 and f"]({png})" in text


def test_a_failing_job_is_reported_and_the_others_finish(tmp_path):
    proc = multirun(tmp_path, "logger=csv", "lpcam.k=2,0,3")
    assert proc.returncode != 0  # the sweep says that a job failed...
    jobs = read_sweep(tmp_path / "sweep")
    assert [j.settings["lpcam.k"] for j in jobs] == ["2", "0", "3"]
    assert jobs[0].results and jobs[2].results  # ...after running the jobs around it
    assert jobs[1].results is None and "lpcam.k=0" in jobs[1].error["error"] and jobs[1].error["input_error"]
    assert "lpcam.k=0" in (jobs[1].path / "run.log").read_text()  # in the job's log too
    text = sweep_report(tmp_path / "sweep").read_text()
    assert "2 of 3 jobs finished" in text and "## Failed jobs" in text and "expected a whole number" in text


def test_a_job_waiting_for_a_killed_holder_resumes_its_training(tmp_path, uninterrupted):
    """Two jobs need the same classifier at once: the first trains it under the cache's lock, the
    second waits. The first is killed (SIGKILL) mid-training: its lock dies with it, and the
    waiting job takes over its training from the last checkpoint, to the uninterrupted numbers."""
    overrides = [*RESUMABLE, f"data_dir={tmp_path / 'data'}", f"cache.dir={tmp_path / 'cache'}"]
    go = tmp_path / "go"
    holder = start([*overrides, f"hydra.run.dir={tmp_path / 'a'}"], tmp_path / "a.log", "train_step:6:SIGKILL", HOLD=go)
    wait_for(tmp_path / "go.ready", holder)  # the holder is at step 6, its epoch 0 checkpointed
    waiter = start([*overrides, f"hydra.run.dir={tmp_path / 'b'}"], tmp_path / "b.log")
    wait_for_text(tmp_path / "b.log", "waiting for another job computing the same classifier", waiter)
    go.touch()  # now the holder kills itself
    assert finish(holder, tmp_path / "a.log")[0] == -signal.SIGKILL
    code, out = finish(waiter, tmp_path / "b.log")
    assert code == 0, out[-3000:]
    assert "resuming the interrupted training" in out
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["provenance"]["classifier"]["source"] == "resumed"
    assert results["methods"] == uninterrupted["results"]["methods"]


def test_report_refuses_a_folder_without_jobs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job folder"):
        read_sweep(tmp_path)
