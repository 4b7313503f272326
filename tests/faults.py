"""Faults fed to real ``lpcam`` commands, for the interruption tests.

``python -m tests.faults [overrides]`` is the ``lpcam`` command with a fault injected:
``LPCAM_TEST_FAULT=POINT:AT:SIGNAL`` sends SIGNAL to the process itself when it reaches POINT for
the AT-th time:

- ``train_step``: the training step of global step AT (0-based, as Lightning counts);
- ``features``, ``evaluate``, ``export``: the AT-th batch (1-based) of the prototype features, of
  the evaluation, of the export, before the batch is processed;
- ``feature_write``: the AT-th feature pool written into the cache, once its bytes are on disk
  under the temporary name and before the rename.

``LPCAM_TEST_FAULT_LOG=FILE`` records how many more times POINT was reached after the signal (a
run that stops at the next batch boundary reaches it no more). ``LPCAM_TEST_FAULT_HOLD=FILE``:
before signalling, create ``FILE.ready`` and wait until ``FILE`` exists (so that a test can line
up a second job first).

The functions below build and start such commands for the tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

state = {"reached": 0, "after": 0, "fired": False}


# ---- the tests' side ----------------------------------------------------------------------------


def lpcam_command(overrides: list[str], faulty: bool) -> list[str]:
    return [sys.executable, "-m", "tests.faults" if faulty else "lpcam.run", *overrides]


def start(overrides: list[str], log: Path, fault: str | None = None, env: dict | None = None, **fault_env: str):
    """Start ``lpcam overrides`` (with ``fault``, see above) writing its output to ``log``;
    ``fault_env``: ``LOG=`` and ``HOLD=`` become ``LPCAM_TEST_FAULT_LOG`` / ``_HOLD``."""
    full_env = {**os.environ, "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("WANDB_API_KEY", None)
    if fault:
        full_env["LPCAM_TEST_FAULT"] = fault
        full_env.update({f"LPCAM_TEST_FAULT_{k}": str(v) for k, v in fault_env.items()})
    with open(log, "w") as out:  # the child writes into its own copy of the descriptor
        return subprocess.Popen(
            lpcam_command(overrides, fault is not None), cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> tuple[int, str]:
    """Wait for a started command; its exit status and output."""
    proc.wait(timeout=timeout)
    return proc.returncode, Path(log).read_text()


def wait_for(path: Path, proc: subprocess.Popen | None = None, timeout: float = 300) -> None:
    """Wait until ``path`` exists (failing if ``proc`` ends first)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc is None or proc.poll() is None, f"the job ended (status {proc.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until the file ``path`` (a job's output) says ``text`` (failing if the job ends first)."""
    deadline = time.monotonic() + timeout
    while not (path.is_file() and text in path.read_text()):
        assert proc.poll() is None, f"the job ended (status {proc.returncode}) before saying {text!r}"
        assert time.monotonic() < deadline, f"{path} never said {text!r}"
        time.sleep(0.05)


# ---- the faulty process's side ------------------------------------------------------------------


def log_after() -> None:
    if path := os.environ.get("LPCAM_TEST_FAULT_LOG"):
        Path(path).write_text(str(state["after"]))


def reached(index: int) -> None:
    """Called at every pass through the fault point, ``index`` its number as AT counts it."""
    _, at, name = os.environ["LPCAM_TEST_FAULT"].split(":")
    if state["fired"]:
        state["after"] += 1
        log_after()
        return
    if index != int(at):
        return
    if hold := os.environ.get("LPCAM_TEST_FAULT_HOLD"):
        Path(hold + ".ready").touch()
        deadline = time.monotonic() + 300
        while not Path(hold).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    state["fired"] = True
    log_after()
    os.kill(os.getpid(), getattr(signal, name))


def install() -> None:
    """Wrap the fault point named in ``LPCAM_TEST_FAULT``, with SIGINT as a terminal's Ctrl-C finds it.

    A command started in the background by a non-interactive shell (``make test &``, a CI step
    under ``nohup``) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler:
    the SIGINT faults would be no-ops and the job would run to its end. A user's Ctrl-C reaches a
    foreground job, whose handler is Python's default, so that is what the faulty command gets.
    """
    import torch

    signal.signal(signal.SIGINT, signal.default_int_handler)

    from lpcam.models.classifier import Classifier
    from lpcam.stages import evaluation, export, prototypes

    point = os.environ["LPCAM_TEST_FAULT"].split(":")[0]

    def next_call() -> int:
        state["reached"] += 1
        return state["reached"]

    def wrap(owner, name: str, index) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            reached(index(*args))
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)

    if point == "train_step":
        wrap(Classifier, "training_step", lambda self, *_: self.trainer.global_step)
    elif point == "evaluate":
        wrap(evaluation.CamEvaluator, "test_step", lambda *_: next_call())
    elif point == "export":
        wrap(export.CamExporter, "predict_step", lambda *_: next_call())
    elif point == "features":
        wrap(prototypes, "multiscale_features", lambda *_: next_call())
    elif point == "feature_write":
        save = torch.save

        def write(obj, f, *args, **kwargs):
            save(obj, f, *args, **kwargs)
            if isinstance(f, (str, Path)) and Path(f).parent.name == "features" and ".partial-" in Path(f).name:
                reached(next_call())

        torch.save = write
    else:
        raise SystemExit(f"LPCAM_TEST_FAULT: unknown point {point!r}")


if __name__ == "__main__":
    install()
    from lpcam.run import main

    main()
