"""Caches shared by the jobs of a sweep, so that only what a job changes is recomputed.

- ``classifiers/<config>-<data>/best.ckpt``: a classifier trained with one training configuration
  on one dataset content, ``config`` a hash of every config entry that changes the trained weights
  (backbone, model, dataset, trainer, seed) and of nothing else, ``data`` the digest of the
  dataset's files (:mod:`lpcam.data.fingerprint`; recorded per kind of file in ``data.json``, so
  a retraining after an in-place edit says what changed). A sweep over ``lpcam.*`` or
  ``evaluation.*`` trains once.
- ``features/<key>.pt``: the sampled feature pool of one classifier's training split (the input of
  the k-means), ``key`` a hash of the weights, the dataset's config and content, and the sampling
  settings (τ, cap, seed). A sweep over K, μ or the aggregation rule extracts the features once.

Parallel jobs (joblib, SLURM) reach for an entry at once: each entry is produced under a file lock,
so one job computes it while the others wait and then read it, and it is published by an atomic
rename, so an interrupted job leaves nothing that a later job would trust. The lock is the
kernel's (``flock``): it dies with its process, so a killed job never blocks the next one, and
whatever a killed job left half-written (``*.partial-<pid>``) is removed by the next job that
takes the entry's lock (nobody else can be writing it then).

The feature pools are capped (``cache.features_max_gb``): after a pool is written, the least
recently used pools (by modification time, which a read refreshes) are removed until the total
fits, never one whose lock another job holds. Trained classifiers are never evicted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from lpcam.atomic import atomic_write
from lpcam.errors import InputError

log = logging.getLogger(__name__)

# entries of the config groups that do not change the trained weights (display, evaluation only)
NOT_TRAINING = {
    "dataset": ("eval_split", "eval_batch_size", "prototype_split", "images_per_class"),
    "trainer": ("enable_progress_bar", "enable_model_summary", "log_every_n_steps", "default_root_dir"),
}
TRAINING_GROUPS = ("backbone", "model", "dataset", "trainer")
# entries that change nothing at their default value, left out of the key then (so the keys of
# caches made before they existed still hold): dataset.bad_images=error trains only on data with no
# bad image, the same data as skip would; model.freeze_backbone=false is how every classifier was
# trained before the setting existed (true is in the key: another classifier)
DEFAULT_ONLY = {"dataset": {"bad_images": "error"}, "model": {"freeze_backbone": False}}


def digest(obj: Any, length: int = 12) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def training_config(cfg: DictConfig) -> dict:
    """The part of the config that determines the trained classifier (what the cache key hashes)."""
    parts = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in TRAINING_GROUPS}
    for group, keys in NOT_TRAINING.items():
        for key in keys:
            parts[group].pop(key, None)
    for group, defaults in DEFAULT_ONLY.items():
        for key, default in defaults.items():
            if parts[group].get(key) == default:
                del parts[group][key]
    parts["seed"] = cfg.seed
    return parts


def classifier_key(cfg: DictConfig, data: str) -> str:
    """The classifier cache entry's name: the training config's digest, then the data's (``data``,
    :attr:`lpcam.data.fingerprint.DataContent.key`)."""
    return f"{digest(training_config(cfg))}-{data}"


def entries_on_other_data(entry: Path) -> list[tuple[Path, dict]]:
    """The cached classifiers of ``entry``'s training config on other data content, with the
    per-kind digests of that data (their ``data.json``), to say what changed since."""
    config = entry.name.split("-")[0]
    found = []
    for other in sorted(entry.parent.glob(f"{config}-*")):
        if other != entry and (other / "best.ckpt").is_file() and (other / "data.json").is_file():
            try:
                found.append((other, json.loads((other / "data.json").read_text())))
            except (OSError, ValueError):
                continue
    return found


def tensors_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Hash of named tensors, bit for bit (names, then raw bytes, in the order given)."""
    h = hashlib.sha1()
    for name, tensor in named:
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def weights_digest(module: torch.nn.Module) -> str:
    """Hash of a model's parameters and buffers: identifies a classifier however it was obtained."""
    return tensors_digest(sorted(module.state_dict().items()))


def secondary_process() -> bool:
    """Whether this process is a non-first process of a distributed job: one that Lightning's DDP
    launcher started (LOCAL_RANK / NODE_RANK > 0) or SLURM did (SLURM_PROCID > 0)."""
    return any(int(os.environ.get(k) or 0) > 0 for k in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """Hold ``<path>.lock``; say so when another job holds it (it is computing the same entry).

    The secondary processes of a distributed job take no lock: their first process holds it for
    the job, and waiting on it would deadlock them (it waits on them to join the training)."""
    if secondary_process():
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another job computing the same %s (%s)", what, path)
        lock.acquire()
    try:
        remove_partials(path)
        yield
    finally:
        lock.release()


def remove_partials(path: Path) -> None:
    """Delete what interrupted writers left of the entry ``path`` (``<path>.partial-<pid>``, and
    any ``*.partial-*`` inside it when it is a folder). Call only while holding its lock: the
    entry's writers write under that lock, so these are the leftovers of dead processes."""
    leftovers = list(path.parent.glob(f"{path.name}.partial-*"))
    if path.is_dir():
        leftovers += list(path.rglob("*.partial-*"))
    for leftover in leftovers:
        log.info("cache: removing %s, left half-written by an interrupted job", leftover)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def publish_file(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def features_max_bytes(cfg: DictConfig) -> int | None:
    """``cache.features_max_gb`` in bytes (None: no cap), refused in one line when impossible."""
    cap = cfg.cache.get("features_max_gb")
    if cap is not None and not (isinstance(cap, (int, float)) and not isinstance(cap, bool) and cap >= 0):
        raise InputError(f"cache.features_max_gb={cap!r}: expected a size in GB >= 0, or null (no cap)")
    return None if cap is None else int(cap * 1024**3)


@dataclass(frozen=True)
class FeatureCache:
    """Where the prototype feature pools of one dataset are shared by a sweep's jobs."""

    dir: Path
    dataset_key: str  # a digest of the dataset's config and content: pools of other data never match
    max_bytes: int | None = None  # the pools' total size cap (all datasets), None: no cap

    @classmethod
    def for_run(cls, cfg: DictConfig, data: Callable[[], str]) -> "FeatureCache | None":
        """The run's feature cache, None when ``cache.features`` is off; ``data`` gives the digest
        of the dataset's content (called only when the cache is on)."""
        if not cfg.cache.features:
            return None
        max_bytes = features_max_bytes(cfg)
        dataset = training_config(cfg)["dataset"]
        for key in ("prototype_split", "images_per_class"):  # which images the pool is sampled from
            if cfg.dataset.get(key) is not None:
                dataset[key] = cfg.dataset[key]
        return cls(Path(cfg.cache.dir), digest([dataset, data()]), max_bytes)

    def path(self, weights: str, sampling: dict) -> Path:
        """The entry of a classifier (``weights``, see :func:`weights_digest`) under ``sampling``
        settings (:meth:`lpcam.prototypes.settings.PrototypeSettings.sampling_dict`)."""
        return self.dir / "features" / f"{digest([weights, self.dataset_key, sampling])}.pt"

    def touch(self, path: Path) -> None:
        """Mark a pool used now (the eviction removes the least recently used first)."""
        try:
            os.utime(path)
        except OSError:  # read-only cache, or evicted meanwhile: only the order of eviction suffers
            pass

    def evict(self, keep: Path) -> list[Path]:
        """Remove the least recently used pools (never ``keep``, the one just written, nor one
        whose lock another job holds) until the pools fit in ``max_bytes``; returns the removed."""
        if self.max_bytes is None:
            return []
        pools = []
        for pool in (self.dir / "features").glob("*.pt"):
            try:
                stat = pool.stat()
            except FileNotFoundError:  # evicted by another job meanwhile
                continue
            pools.append((stat.st_mtime, stat.st_size, pool))
        pools.sort(key=lambda t: t[0])
        total = sum(size for _, size, _ in pools)
        removed = []
        for _, size, pool in pools:
            if total <= self.max_bytes:
                break
            if pool == keep:
                continue
            lock = FileLock(str(pool) + ".lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:  # a job is reading or writing it
                continue
            try:
                remove_partials(pool)
                pool.unlink(missing_ok=True)
            finally:
                lock.release()
            total -= size
            removed.append(pool)
        if removed:
            log.info(
                "cache: removed %d least recently used feature pools to stay under cache.features_max_gb (%.2f GB)",
                len(removed), self.max_bytes / 1024**3,
            )  # fmt: skip
        return removed
