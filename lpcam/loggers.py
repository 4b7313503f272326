"""Experiment loggers per stage: one W&B run per stage of a job, grouped by sweep, named by overrides.

A sweep's W&B dashboard then compares like with like: every job of a multirun shares the sweep's
group; a run's name is its overrides (``lpcam.k=6,lpcam/aggregation=max``); its ``job_type`` is the
stage (``train`` or ``evaluate``), so training curves and seed metrics are never mixed. Every run is
finished when its stage ends, also when it fails, so jobs never merge into one run.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger


class QuietWandbLogger(WandbLogger):
    """Lightning's W&B logger without the ``anonymous`` argument it always passes to
    ``wandb.init``: W&B warns on every run that the setting has no effect any more."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


def sweep_group() -> str | None:
    """The multirun's sweep directory (shared by all its jobs), None for a single run."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return str(HydraConfig.get().sweep.dir)


def swept_keys() -> set[str]:
    """The keys a multirun sweeps: those given several values on its command line (read back from
    the sweep's ``multirun.yaml``) and those a sweeper's ``params`` search (Optuna)."""
    hc = HydraConfig.get()
    keys = set((OmegaConf.select(hc, "sweeper.params") or {}).keys())
    saved = Path(hc.sweep.dir) / "multirun.yaml"
    if saved.is_file():
        task = OmegaConf.load(saved).hydra.overrides.task
        keys |= {o.get_key_element() for o in OverridesParser.create().parse_overrides(list(task)) if o.is_sweep_override()}
    return keys


def run_name() -> str | None:
    """A multirun job's swept settings (``lpcam.k=6,lpcam/aggregation=max``), which tell the jobs
    of a sweep apart; else the job's overrides as ``override_dirname`` (plumbing keys excluded in
    ``conf/config.yaml``); None (W&B picks a name) without overrides."""
    if not HydraConfig.initialized():
        return None
    if sweep_group() is not None and (keys := swept_keys()):
        job = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
        return ",".join(o.input_line for o in job if o.get_key_element() in keys) or None
    return HydraConfig.get().job.override_dirname or None


def make_loggers(cfg: DictConfig, stage: str) -> list[Logger]:
    loggers = []
    for conf in (cfg.get("logger") or {}).values():
        if conf is None:
            continue
        target = str(conf.get("_target_", ""))
        extra: dict = {}
        if target.endswith("WandbLogger"):
            extra = {"job_type": stage, "group": conf.get("group") or sweep_group(), "name": conf.get("name") or run_name()}
        elif target.endswith("CSVLogger"):
            extra = {"version": stage}  # csv/train/metrics.csv, csv/evaluate/metrics.csv
        loggers.append(instantiate(conf, **extra))
    for logger in loggers:
        logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "stage": stage})
    return loggers


@contextmanager
def stage_loggers(cfg: DictConfig, stage: str) -> Iterator[list[Logger]]:
    """The loggers of one stage, finished when it ends (with a failure code if it raised)."""
    loggers = make_loggers(cfg, stage)
    failed = True
    try:
        yield loggers
        failed = False
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish(exit_code=1 if failed else 0)
            else:
                logger.finalize("failed" if failed else "success")


def log_artifact(loggers: list[Logger], path: Path, name: str, kind: str) -> None:
    """A file as a W&B artifact (versioned, downloadable from the dashboard; kept offline too)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            artifact = wandb.Artifact(name=name, type=kind)
            artifact.add_file(str(path))
            logger.experiment.log_artifact(artifact)



@contextmanager
def wandb_written() -> Iterator[None]:
    """At the block's end, wait until W&B has written this process's runs to disk. Its service
    process may still be writing a run when ``finish()`` returns; ``wandb.teardown()`` waits for
    it. The entry point wraps each job in this, so a job's offline runs are complete (ready for
    ``wandb sync``) when it returns, also in a sweep's worker process, where W&B's own atexit hook
    is not reliable."""
    try:
        yield
    finally:
        if "wandb" in sys.modules:
            sys.modules["wandb"].teardown()
