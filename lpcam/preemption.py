"""Stopping on a scheduler's signal: SIGTERM (``kill``, ``scancel``, a preemption) or SIGUSR1
(SLURM's warning before a time limit or a preemption, asked for with ``#SBATCH --signal=USR1@90``)
stops the run within seconds, with every file it wrote complete and its training resumable; the
entry point then exits with 128 + the signal's number, so a scheduler or a sweep counts it failed.

Where the signal lands decides how the run stops:

- inside a Lightning loop (training, evaluation, export), Lightning's own SIGTERM flag stops the
  loop at the next batch (under DDP it tells every process, so none is left waiting in a
  collective); SIGUSR1 is handed to that same SIGTERM path;
- anywhere else (the prototype build, data generation, writing results), the handler raises
  :class:`Preempted` at once, as Ctrl-C raises KeyboardInterrupt: the code between is already
  safe against that (atomic writes, locks released in ``finally``).

After each Lightning run the pipeline calls :func:`check`, which raises for a signal that came
too late in the run for Lightning to act on it.

Under SLURM, SIGUSR1 also requeues the job with ``scontrol requeue``, as Lightning's
``SLURMEnvironment(auto_requeue=True)`` does (the same job id, ``<array job>_<task>`` for array
jobs). lpcam takes SIGUSR1 itself rather than leaving it to Lightning, whose handler only covers
``trainer.fit`` and saves a mid-epoch ``hpc_ckpt_<n>.ckpt`` into ``trainer.default_root_dir`` (a
run folder named by the time, which a requeued job never finds) from which training could not
resume bit for bit anyway; the requeued job resumes from the last end-of-epoch checkpoint
(:mod:`lpcam.stages.resume`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: int | None = None  # the first stop signal of this run
_previous: dict[int, object] = {}  # the handlers ours replaced (called too, as Lightning does)


class Preempted(SIGTERMException):
    """The run was stopped by a signal. A ``SystemExit`` (as Lightning's SIGTERMException, which it
    extends), so nothing on the way out mistakes it for an error of the run, and its exit code is
    128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def received() -> int | None:
    """The stop signal this run received, None if none."""
    return _received


def check() -> None:
    """Raise :class:`Preempted` if a stop signal came (call where the run may stop cleanly)."""
    if _received is not None:
        raise Preempted(_received)


def requeue_slurm_job() -> None:
    """``scontrol requeue`` this SLURM job (nothing outside SLURM, nor in a job's other tasks)."""
    if not SLURMEnvironment.detect() or int(os.environ.get("SLURM_PROCID") or 0) > 0:
        return
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        result = subprocess.call(["scontrol", "requeue", job])
    except OSError as err:
        log.warning("could not requeue SLURM job %s: %s", job, err)
        return
    if result == 0:
        log.warning("requeued SLURM job %s: it will resume where this run stops", job)
    else:
        log.warning("scontrol requeue %s failed with exit code %d", job, result)


def _handle(signum: int, frame: FrameType | None) -> None:
    global _received
    previous = _previous.get(signum)
    if callable(previous):
        previous(signum, frame)
    if _received is not None:  # already stopping: the second signal of a preemption (SLURM's SIGTERM)
        return
    _received = signum
    log.warning(
        "received %s: stopping; what was written is complete, and the same command resumes", signal.Signals(signum).name
    )
    if signum == signal.SIGUSR1:
        requeue_slurm_job()
    current = signal.getsignal(signal.SIGTERM)
    if current is _handle:  # no Lightning loop running: stop here
        raise Preempted(signum)
    if signum != signal.SIGTERM and callable(current):  # Lightning's loop stops at its next batch
        current(signal.SIGTERM, frame)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Handle SIGTERM and SIGUSR1 as above while the block runs (then restore the handlers)."""
    global _received
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    _received = None
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    _previous.clear()
    _previous.update({s: h for s, h in saved.items() if callable(h)})
    for s in STOP_SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        _previous.clear()
