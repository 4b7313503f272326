"""The terminal of a run shows lpcam's lines, the bars and the table; dependencies' chatter goes to run.log."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from lpcam.console import ConsoleFilter
from tests.conftest import ROOT, TINY


def run_job(tmp_path, *extra: str) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # as a user's shell: W&B not silenced
    env["WANDB_MODE"] = "offline"
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lpcam.run", *TINY, "logger=wandb", "trainer.enable_progress_bar=true",
           f"data_dir={tmp_path / 'data'}", f"cache.dir={tmp_path / 'cache'}", f"hydra.run.dir={run}", *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr, (run / "run.log").read_text()


def test_a_run_prints_no_tips_deprecations_or_wandb_banners_and_logs_them(tmp_path):
    terminal, log = run_job(tmp_path)
    assert "Tip:" not in terminal and "is deprecated" not in terminal and "DeprecationWarning" not in terminal
    assert "wandb:" not in terminal and "Run summary" not in terminal and "Run history" not in terminal
    assert "lpcam_official" in terminal and "method " in terminal  # the final table
    assert "Tip:" in log  # Lightning's lines are kept, in the job's log
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))  # W&B still logged, silently


def test_hydra_verbose_brings_the_chatter_back(tmp_path):
    terminal, _ = run_job(tmp_path, "hydra.verbose=true")
    assert "Tip:" in terminal


def test_the_filter_keeps_own_lines_and_every_warning_but_dependencies_warnings():
    f = ConsoleFilter()
    record = lambda name, level, msg="m": logging.LogRecord(name, level, __file__, 1, msg, None, None)  # noqa: E731
    assert f.filter(record("lpcam.pipeline", logging.INFO))
    assert not f.filter(record("pytorch_lightning.utilities.rank_zero", logging.INFO))
    assert f.filter(record("pytorch_lightning.trainer", logging.WARNING))
    dependency = "/x/site-packages/pytorch_lightning/utilities/_pytree.py:21: `LeafSpec` is deprecated"
    assert not f.filter(record("py.warnings", logging.WARNING, dependency))
    from lpcam import console

    assert f.filter(record("py.warnings", logging.WARNING, f"{console.PACKAGE}{os.sep}cache.py:3: UserWarning: x"))
