"""Experiment loggers per stage: one W&B run per stage of a job, grouped by sweep, named by overrides.

A sweep's W&B dashboard then compares like with like: every job of a multirun shares the sweep's
group; a run's name is its overrides (``lpcam.k=6,lpcam/aggregation=max``); its ``job_type`` is the
stage (``train`` or ``evaluate``), so training curves and seed metrics are never mixed. Every run is
finished when its stage ends, also when it fails, so jobs never merge into one run.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger


def sweep_group() -> str | None:
    """The multirun's sweep directory (shared by all its jobs), None for a single run."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return str(HydraConfig.get().sweep.dir)


def run_name() -> str | None:
    """The job's overrides as Hydra writes them into ``override_dirname`` (keys that name the
    sweep's plumbing, not a setting, are excluded in ``conf/config.yaml``)."""
    if not HydraConfig.initialized():
        return None
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
