"""Runs stopped by signals at every stage, as a user or a scheduler stops them, resume to the
numbers of an uninterrupted run; and the cache survives its writers' deaths (locks, partial
files, size cap). The faults are injected into real ``lpcam`` commands by ``tests/faults.py``."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock, Timeout

from lpcam.atomic import atomic_write
from lpcam.cache import FeatureCache, locked
from lpcam.errors import InputError
from lpcam.pipeline import run
from lpcam.prototypes.store import Prototypes
from tests.conftest import RESUMABLE, TINY
from tests.faults import ROOT, finish, start

SLURM_ENV = {  # what SLURM sets for a batch job's single task
    "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "lpcam-test",
    "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
}  # fmt: skip


TINY_KEYS = set(TINY)  # RESUMABLE's own additions are those not in TINY


def fake_scontrol(tmp_path: Path) -> tuple[dict, Path]:
    """A ``scontrol`` first on PATH that records its arguments: SLURM's requeue, observed."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    return {**SLURM_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, calls


def partials(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.partial-*"))


def test_a_job_stopped_at_every_stage_resumes_to_the_uninterrupted_numbers(tmp_path, uninterrupted):
    """The same command, stopped again and again, each rerun resuming where the last one stopped:
    training stopped mid-epoch by SIGINT, SIGTERM, SIGKILL and SLURM's SIGUSR1; the prototype
    build by SIGTERM; the feature cache write by SIGKILL; the evaluation by SIGUSR1. The last run
    ends with the uninterrupted run's numbers, bit for bit."""
    overrides = [*RESUMABLE, f"data_dir={tmp_path / 'data'}", f"cache.dir={tmp_path / 'cache'}", "cache.features_max_gb=0"]
    classifiers = tmp_path / "cache" / "classifiers"
    slurm_env, scontrol_calls = fake_scontrol(tmp_path)
    # an old pool in the feature cache: the cap (0 GB) evicts it when this job writes its own
    old_pool = tmp_path / "cache" / "features" / "0123456789ab.pt"
    old_pool.parent.mkdir(parents=True)
    old_pool.write_bytes(b"\0" * 1000)

    def stop(name: str, fault: str, status: int, env: dict | None = None) -> str:
        after = tmp_path / f"{name}.after"
        proc = start([*overrides, f"hydra.run.dir={tmp_path / name}"], tmp_path / f"{name}.log", fault, env, LOG=after)
        code, out = finish(proc, tmp_path / f"{name}.log")
        assert code == status, f"{name}: exit status {code}, expected {status}\n{out[-3000:]}"
        if fault.endswith(("SIGTERM", "SIGUSR1")):  # stopped at once: the fault point was not reached again
            assert after.read_text() == "0", f"{name}: went on for {after.read_text()} more batches"
            sig = fault.rsplit(":", 1)[1]
            assert f"lpcam: stopped by {sig}" in out
            error = json.loads((tmp_path / name / "error.json").read_text())
            assert error["type"] == "Preempted" and error["error"] == f"stopped by {sig}"
        return out

    def training_in_progress(name: str) -> None:
        """No checkpoint that looks complete; the last end-of-epoch one, ready to resume."""
        assert not (tmp_path / name / "checkpoints" / "best.ckpt").exists()
        (entry,) = [p for p in classifiers.iterdir() if p.is_dir()]
        assert not (entry / "best.ckpt").exists() and (entry / "in_progress" / "last.ckpt").is_file()
        assert not (tmp_path / name / "results.json").exists()

    stop("sigint", "train_step:6:SIGINT", 1)  # Lightning turns Ctrl-C into exit status 1
    training_in_progress("sigint")
    assert not partials(tmp_path / "cache")
    assert torch.load(classifiers.glob("*/in_progress/last.ckpt").__next__(), weights_only=True)["epoch"] == 0

    out = stop("sigterm", "train_step:10:SIGTERM", 128 + signal.SIGTERM)
    assert "resuming the interrupted training" in out
    training_in_progress("sigterm")

    stop("sigkill", "train_step:14:SIGKILL", -signal.SIGKILL)
    training_in_progress("sigkill")

    stop("slurm", "train_step:18:SIGUSR1", 128 + signal.SIGUSR1, slurm_env)
    training_in_progress("slurm")
    assert scontrol_calls.read_text() == "requeue 4242\n"  # requeued as Lightning's SLURMEnvironment does
    (last,) = classifiers.glob("*/in_progress/last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 3  # the end of epoch 3 (of 0..4)

    # the training ends; the prototype build is stopped at its second batch
    stop("prototypes", "features:2:SIGTERM", 128 + signal.SIGTERM)
    training_in_progress("prototypes")
    assert not (tmp_path / "prototypes" / "prototypes.pt").exists()

    # killed while writing the feature pool into the cache: a partial file is left behind...
    stop("pool_write", "feature_write:1:SIGKILL", -signal.SIGKILL)
    (left,) = partials(tmp_path / "cache")
    assert left.parent.name == "features" and ".pt.partial-" in left.name
    assert list(left.parent.glob("*.pt")) == [old_pool]  # nothing half-written published
    training_in_progress("pool_write")

    # ...which the next job removes when it takes that entry's lock; it publishes the classifier,
    # then its evaluation is stopped by SIGUSR1
    stop("evaluation", "evaluate:1:SIGUSR1", 128 + signal.SIGUSR1)
    assert not partials(tmp_path / "cache")
    (entry,) = [p for p in classifiers.iterdir() if p.is_dir()]
    assert (entry / "best.ckpt").is_file() and not (entry / "in_progress").exists()
    assert (tmp_path / "evaluation" / "checkpoints" / "best.ckpt").is_file()
    assert not (tmp_path / "evaluation" / "results.json").exists()
    pools = list((tmp_path / "cache" / "features").glob("*.pt"))
    assert len(pools) == 1 and old_pool not in pools  # the old pool evicted, this job's kept

    # the same command, once more: the uninterrupted run's numbers
    proc = start([*overrides, f"hydra.run.dir={tmp_path / 'final'}"], tmp_path / "final.log")
    code, out = finish(proc, tmp_path / "final.log")
    assert code == 0, out[-3000:]
    final = json.loads((tmp_path / "final" / "results.json").read_text())
    assert final["methods"] == uninterrupted["results"]["methods"]
    assert final["prototypes"]["counts"] == uninterrupted["results"]["prototypes"]["counts"]
    (reference,) = (uninterrupted["cache"] / "classifiers").glob("*/best.ckpt")
    ours, theirs = (torch.load(p, weights_only=False) for p in (entry / "best.ckpt", reference))
    assert ours["epoch"] == theirs["epoch"]
    for name, tensor in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][name], tensor), name
    a, b = Prototypes.load(tmp_path / "final" / "prototypes.pt"), Prototypes.load(uninterrupted["run"] / "prototypes.pt")
    for x, y in zip(a.class_protos + a.context_protos, b.class_protos + b.context_protos):
        assert torch.equal(x, y)


def test_resume_path_continues_another_runs_training_and_false_starts_over(tiny, tmp_path, uninterrupted, monkeypatch):
    """With the classifier cache off, a training checkpoints into its own run folder, where
    ``resume=PATH`` finds it; ``resume=false`` starts over; bad values are refused before any work."""
    from lpcam.models.classifier import Classifier
    from lpcam.stages.resume import TrainingProgress

    with pytest.raises(InputError, match="resume=.*nope.ckpt: no such checkpoint"):
        run(tiny(f"resume={tmp_path / 'nope.ckpt'}", run="bad"))
    with pytest.raises(InputError, match="ckpt_path= loads a trained classifier.*give one of them"):
        run(tiny(f"resume={__file__}", f"ckpt_path={__file__}", run="bad"))
    with pytest.raises(InputError, match="cache.features_max_gb=-1"):
        run(tiny("cache.features_max_gb=-1", run="bad"))
    assert not (tmp_path / "data").exists()  # refused before generating anything

    resumable = [o for o in RESUMABLE if o not in TINY_KEYS] + ["cache.classifier=false", "cache.features=false"]
    step = Classifier.training_step

    def crash_at_step_9(self, batch, index):
        if self.trainer.global_step == 9:
            raise RuntimeError("the machine went down")
        return step(self, batch, index)

    monkeypatch.setattr(Classifier, "training_step", crash_at_step_9)
    with pytest.raises(RuntimeError, match="the machine went down"):
        run(tiny(*resumable, run="first"))
    monkeypatch.setattr(Classifier, "training_step", step)
    last = tmp_path / "first" / "checkpoints" / "in_progress" / "last.ckpt"
    assert last.is_file() and not (tmp_path / "first" / "checkpoints" / "best.ckpt").exists()
    resumed = run(tiny(*resumable, f"resume={last}", run="second"))
    assert resumed["provenance"]["classifier"]["source"] == "resumed"
    assert resumed["methods"] == uninterrupted["results"]["methods"]  # also: in-process = the command's
    assert last.is_file()  # another run's folder: left to its owner

    cfg = tiny("resume=false", run="third")
    progress = TrainingProgress.plan(cfg, last.parent)
    assert progress.resume_from is None and not last.parent.exists()  # an interrupted training dropped


def test_a_killed_lock_holder_leaves_no_stale_lock(tmp_path):
    entry = tmp_path / "cache" / "classifiers" / "abc"
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom lpcam.cache import locked\n"
        f"with locked(Path({str(entry)!r}), 'classifier'):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    lock = FileLock(str(entry) + ".lock")
    with pytest.raises(Timeout):  # held...
        lock.acquire(timeout=0)
    holder.kill()  # SIGKILL: no cleanup runs in the holder
    holder.wait()
    lock.acquire(timeout=60)  # ...and free once its holder is dead (the kernel releases flock)
    lock.release()
    with locked(entry, "classifier"):  # what the next job does
        pass


def test_leftovers_of_interrupted_writes_go_with_the_next_lock_holder(tmp_path):
    entry = tmp_path / "classifiers" / "abc"
    (entry / "in_progress").mkdir(parents=True)
    dead = [entry / "best.ckpt.partial-99999", entry / "in_progress" / "last.ckpt.partial-99999"]
    pool = tmp_path / "features" / "f00d.pt"
    pool.parent.mkdir()
    dead_pool = pool.with_name("f00d.pt.partial-99999")
    other = pool.with_name("beef.pt.partial-99999")  # another entry's: left to that entry's holder
    for p in [*dead, dead_pool, other]:
        p.write_bytes(b"half")
    with locked(entry, "classifier"):
        assert not any(p.exists() for p in dead) and dead_pool.exists()
    with locked(pool, "feature pool"):
        assert not dead_pool.exists() and other.exists()


def test_a_sigint_during_a_cache_write_leaves_no_partial_file(tmp_path):
    dst = tmp_path / "features" / "f00d.pt"

    def write(tmp: Path) -> None:
        torch.save({"x": torch.zeros(1000)}, tmp)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C with the bytes on disk, before the rename

    # Python's own Ctrl-C handler, also where pytest was started with SIGINT ignored (in the
    # background by a non-interactive shell), where the signal would otherwise do nothing
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_write(dst, write)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not dst.exists() and not list(dst.parent.iterdir())


def test_the_feature_cache_evicts_the_least_recently_used_pools_never_a_locked_one(tmp_path):
    features = tmp_path / "features"
    features.mkdir()
    pools = [features / f"{i:012x}.pt" for i in range(4)]
    for i, pool in enumerate(pools):  # 1 MB each, used in this order
        pool.write_bytes(b"\0" * 2**20)
        os.utime(pool, (1_000_000 + i, 1_000_000 + i))
    cache = FeatureCache(tmp_path, "dataset", max_bytes=int(3.5 * 2**20))
    cache.touch(pools[1])  # read now: the most recently used
    busy = FileLock(str(pools[0]) + ".lock")
    busy.acquire()  # another job reads the oldest pool
    try:
        removed = cache.evict(keep=pools[3])
    finally:
        busy.release()
    # 4 MB > 3.5 MB: one goes, the least recently used that nobody holds and not the new one
    assert removed == [pools[2]]
    assert [p.exists() for p in pools] == [True, True, False, True]
    assert FeatureCache(tmp_path, "dataset", max_bytes=None).evict(keep=pools[3]) == []  # no cap
