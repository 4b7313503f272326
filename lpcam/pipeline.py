"""The stages of one run: train the classifier (prototypes built by its callback), evaluate the
CAMs, write results. ``lpcam.run`` composes the config and calls :func:`run`."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger

from lpcam.callbacks.prototypes import CHECKPOINT_KEY, PrototypeCallback
from lpcam.data.datamodule import VOCDataModule
from lpcam.evaluator import CamEvaluator
from lpcam.models.classifier import Classifier
from lpcam.prototypes.build import build_prototypes
from lpcam.prototypes.store import Prototypes
from lpcam.results import SCHEMA, log_results, peak_memory_mb, write_json
from lpcam.viz import cam_figure

log = logging.getLogger(__name__)

BUILD_KEYS = (
    "k", "tau", "mu_fg", "mu_bg", "context_min", "score", "keep_best",
    "max_features_per_class", "kmeans_metric", "kmeans_max_iter",
)  # fmt: skip


def prototype_settings(cfg: DictConfig) -> dict:
    """The ``lpcam`` config entries that :func:`build_prototypes` takes, plus the run's seed."""
    return {**{k: cfg.lpcam[k] for k in BUILD_KEYS}, "seed": cfg.seed}


def hydra_overrides() -> list[str]:
    """The command-line overrides of this job (empty when called outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def make_loggers(cfg: DictConfig) -> list[Logger]:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


def train_stage(cfg: DictConfig, dm: VOCDataModule, loggers: list[Logger], run_dir: Path) -> tuple[Classifier, Prototypes, float]:
    """Fit the classifier; its PrototypeCallback builds the prototypes from the best checkpoint."""
    classifier = instantiate(cfg.model, backbone=instantiate(cfg.backbone), num_classes=dm.num_classes)
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/loss", mode="min")
    protos_cb = PrototypeCallback(run_dir / "prototypes.pt", prototype_settings(cfg))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=[checkpoint, protos_cb], logger=loggers or False)
    t0 = time.perf_counter()
    trainer.fit(classifier, datamodule=dm)
    seconds = time.perf_counter() - t0 - sum(classifier.prototypes.meta["timings_s"].values())
    return classifier, classifier.prototypes, seconds


def load_stage(cfg: DictConfig, dm: VOCDataModule) -> tuple[Classifier, Prototypes | None]:
    """A trained classifier from ``ckpt_path`` (and the prototypes it carries, if any)."""
    import torch

    path = Path(cfg.ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint")
    classifier = Classifier.load_from_checkpoint(path, map_location="cpu", backbone=instantiate(cfg.backbone))
    if classifier.hparams.num_classes != dm.num_classes:
        raise ValueError(
            f"ckpt_path={path}: the classifier has {classifier.hparams.num_classes} classes, "
            f"dataset {dm.name} has {dm.num_classes}"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    protos = Prototypes.from_dict(ckpt[CHECKPOINT_KEY], str(path)) if CHECKPOINT_KEY in ckpt else None
    return classifier, protos


def run(cfg: DictConfig) -> dict:
    """Train (or load), build (or load) prototypes, evaluate CAM and LPCAM; return results.json."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    dm: VOCDataModule = instantiate(cfg.dataset)
    dm.prepare_data()
    loggers = make_loggers(cfg)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    train_s = 0.0
    if cfg.ckpt_path:
        classifier, protos = load_stage(cfg, dm)
    else:
        classifier, protos, train_s = train_stage(cfg, dm, loggers, run_dir)
    backbone = classifier.backbone
    if cfg.lpcam.prototypes_path:
        protos = Prototypes.load(cfg.lpcam.prototypes_path)
        protos.meta.setdefault("timings_s", {})
    elif protos is None or any(protos.meta.get(k) != v for k, v in prototype_settings(cfg).items()):
        protos = build_prototypes(classifier, dm.prototype_dataloader(), dm.class_names, dm.name, **prototype_settings(cfg))
        protos.save(run_dir / "prototypes.pt")
    protos.check_compatible(backbone.name, backbone.layer, backbone.out_channels, dm.class_names, str(cfg.lpcam.prototypes_path or run_dir / "prototypes.pt"))

    evaluator = CamEvaluator(
        classifier,
        protos,
        dm.class_names,
        aggregation=instantiate(cfg.lpcam.aggregation),
        **OmegaConf.to_container(cfg.evaluation, resolve=True),
    )
    tester: pl.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    tester.test(evaluator, datamodule=dm, verbose=False)

    built = protos.meta.get("timings_s", {})
    results = {
        "schema": SCHEMA,
        "dataset": dm.name,
        "split": dm.eval_split,
        "backbone": backbone.name,
        "seed": cfg.seed,
        "methods": evaluator.results,
        "lpcam": {
            "k": cfg.lpcam.k,
            "tau": cfg.lpcam.tau,
            "mu_fg": cfg.lpcam.mu_fg,
            "mu_bg": cfg.lpcam.mu_bg,
            "aggregation": evaluator.aggregation_name,
            "score": cfg.lpcam.score,
            "prototypes": protos.counts(),
            "halo_share": {name: s.get("halo_share") for name, s in protos.stats.items()},
        },
        "timings_s": {
            "train": round(train_s, 2),
            "features": round(built.get("features", 0.0), 2),
            "clustering": round(built.get("clustering", 0.0), 2),
            "extraction": round(evaluator.timings["extraction"], 2),
            "evaluation": round(evaluator.timings["evaluation"], 2),
        },
        "peak_memory_mb": peak_memory_mb(),
        "overrides": hydra_overrides(),
    }
    write_json(results, run_dir / "results.json")
    figure = cam_figure(evaluator.examples, evaluator.methods, dm.class_names, run_dir / "cams.png")
    log_results(loggers, results, figure)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # each job its own run, so sweep jobs never merge
    log.info("results: %s", run_dir / "results.json")
    return results
