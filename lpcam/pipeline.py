"""The stages of one run: train the classifier (prototypes built by its callback), evaluate the
CAMs, write results. ``lpcam.run`` composes the config and calls :func:`run`."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger

from lpcam.callbacks.prototypes import CHECKPOINT_KEY, PrototypeCallback
from lpcam.data.datamodule import VOCDataModule
from lpcam.errors import InputError, MissingInput
from lpcam.evaluator import CamEvaluator
from lpcam.models.backbones import Backbone
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


def train_stage(
    cfg: DictConfig, dm: VOCDataModule, backbone: Backbone, loggers: list[Logger], run_dir: Path, build: bool = True
) -> tuple[Classifier, Prototypes | None, float]:
    """Fit the classifier; unless ``build`` is off, its PrototypeCallback builds the prototypes
    from the best checkpoint. Returns the training seconds without the prototype build."""
    classifier = instantiate(cfg.model, backbone=backbone, num_classes=dm.num_classes)
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/loss", mode="min")
    ]
    if build:
        callbacks.append(PrototypeCallback(run_dir / "prototypes.pt", prototype_settings(cfg)))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    t0 = time.perf_counter()
    trainer.fit(classifier, datamodule=dm)
    protos: Prototypes | None = getattr(classifier, "prototypes", None)
    build_s = sum(protos.meta["timings_s"].values()) if protos is not None else 0.0
    return classifier, protos, time.perf_counter() - t0 - build_s


def load_stage(cfg: DictConfig, dm: VOCDataModule, backbone: Backbone) -> tuple[Classifier, Prototypes | None]:
    """A trained classifier from ``ckpt_path`` (and the prototypes it carries, if any)."""
    path = Path(cfg.ckpt_path)
    if not path.is_file():
        raise MissingInput(f"ckpt_path={path}: no such checkpoint")
    classifier = Classifier.load_from_checkpoint(path, map_location="cpu", backbone=backbone)
    if classifier.hparams.num_classes != dm.num_classes:
        raise InputError(
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

    backbone: Backbone = instantiate(cfg.backbone)
    given = None
    if cfg.lpcam.prototypes_path:  # checked before any training, so a wrong file fails at once
        given = Prototypes.load(cfg.lpcam.prototypes_path)
        given.check_compatible(backbone.name, backbone.layer, backbone.out_channels, dm.class_names, str(cfg.lpcam.prototypes_path))
    train_s, built = 0.0, {}  # built: timings of a prototype build done in this run
    if cfg.ckpt_path:
        classifier, protos = load_stage(cfg, dm, backbone)
    else:
        classifier, protos, train_s = train_stage(cfg, dm, backbone, loggers, run_dir, build=given is None)
        built = protos.meta["timings_s"] if protos is not None else {}
    if given is not None:
        protos = given
    elif protos is None or any(protos.meta.get(k) != v for k, v in prototype_settings(cfg).items()):
        protos = build_prototypes(classifier, dm.prototype_dataloader(), dm.class_names, dm.name, **prototype_settings(cfg))
        built = protos.meta["timings_s"]
    if not (run_dir / "prototypes.pt").is_file():
        protos.save(run_dir / "prototypes.pt")

    evaluator = CamEvaluator(
        classifier,
        protos,
        dm.class_names,
        aggregation=instantiate(cfg.lpcam.aggregation),
        **OmegaConf.to_container(cfg.evaluation, resolve=True),
    )
    # CAMs in full precision whatever the training precision: thresholds resolve differences of 0.01
    tester: pl.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[], precision="32-true")
    tester.test(evaluator, datamodule=dm, verbose=False)

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
            "prototype_parts": {
                name: {k: s[k] for k in ("class_prototypes", "rejected_fg_centres", "context_prototypes") if k in s}
                for name, s in protos.stats.items()
            },
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
