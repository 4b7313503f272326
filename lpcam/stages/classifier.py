"""The classifier stage: a trained multi-label classifier, from ``ckpt_path``, the sweep's
classifier cache, or trained here (its :class:`PrototypeCallback` then builds the prototypes)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from lpcam.cache import FeatureCache, classifier_key, entries_on_other_data, locked, publish_file, training_config
from lpcam.data.datamodule import SegmentationDataModule
from lpcam.errors import InputError, MissingInput
from lpcam.loggers import stage_loggers
from lpcam.models.backbones import Backbone
from lpcam.models.classifier import Classifier
from lpcam.prototypes.settings import PrototypeSettings
from lpcam.prototypes.store import Prototypes
from lpcam.results import write_json
from lpcam.safe_load import torch_load
from lpcam.stages.prototypes import PrototypeCallback
from lpcam.stages.provenance import Provenance

log = logging.getLogger(__name__)

NEEDS_TRAINED = ("evaluate", "export")  # stages that use a trained classifier and never train one


@dataclass
class ClassifierStage:
    """What the stage produced: the classifier and where it came from, and the prototypes that
    came with it (built by the callback after training, or carried by the checkpoint), if any."""

    classifier: Classifier
    provenance: Provenance
    prototypes: Prototypes | None = None
    prototypes_provenance: Provenance | None = None


class TrainingTime(pl.Callback):
    """Seconds from the start of fitting to the end of training: the classifier's cost alone, not
    what other callbacks do when the fit ends (the prototype build times itself)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self._start


def train(
    cfg: DictConfig,
    dm: SegmentationDataModule,
    backbone: Backbone,
    run_dir: Path,
    prototypes: PrototypeSettings | None,
    features: FeatureCache | None = None,
) -> ClassifierStage:
    """Fit the classifier, keeping the best checkpoint by validation loss; with ``prototypes``
    settings, its PrototypeCallback then builds the prototypes from that checkpoint."""
    classifier = instantiate(cfg.model, backbone=backbone, num_classes=dm.num_classes)
    # the best epoch by validation loss; without a validation split, the last epoch (saved all the same)
    monitor = "val/loss" if dm.val_split else None
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode="min")
    timer = TrainingTime()
    builder = PrototypeCallback(run_dir / "prototypes.pt", prototypes, features) if prototypes is not None else None
    with stage_loggers(cfg, "train") as loggers:
        trainer: pl.Trainer = instantiate(
            cfg.trainer, callbacks=[checkpoint, timer, *([builder] if builder else [])], logger=loggers or False
        )
        trainer.fit(classifier, datamodule=dm)
    path = checkpoint.best_model_path or str(run_dir / "checkpoints" / "best.ckpt")
    # the best epoch's weights, not the last's (the PrototypeCallback, when there is one, reloaded them already)
    classifier.load_state_dict(torch_load(path, "checkpoint")["state_dict"])
    return ClassifierStage(
        classifier,
        Provenance("trained", path, {"train": timer.seconds}),
        builder.prototypes if builder else None,
        builder.provenance if builder else None,
    )


def load(path: Path, field: str, dm: SegmentationDataModule, backbone: Backbone, source: str) -> ClassifierStage:
    """A trained classifier from a checkpoint, with the prototypes it carries, if any."""
    if not path.is_file():
        raise MissingInput(f"{field}={path}: no such checkpoint")
    checkpoint = torch_load(path, field)  # tensors and plain containers only: a checkpoint runs no code
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(checkpoint):
        raise InputError(f"{field}={path}: not a checkpoint of an lpcam classifier (no state_dict and hyper_parameters)")
    classes = checkpoint["hyper_parameters"].get("num_classes")
    if classes != dm.num_classes:
        raise InputError(f"{field}={path}: the classifier has {classes} classes, dataset {dm.name} has {dm.num_classes}")
    try:
        classifier = Classifier.load_from_checkpoint(path, map_location="cpu", backbone=backbone, weights_only=True)
    except RuntimeError as err:  # the weights of another architecture
        detail = " ".join(line.strip() for line in str(err).splitlines()[:2])[:300]
        raise InputError(f"{field}={path}: its weights do not fit backbone {backbone.name}: {detail}") from None
    protos = Prototypes.from_checkpoint(checkpoint, str(path))
    return ClassifierStage(
        classifier,
        Provenance(source, str(path)),
        protos,
        Provenance("checkpoint", str(path)) if protos is not None else None,
    )


def obtain(
    cfg: DictConfig,
    dm: SegmentationDataModule,
    backbone: Backbone,
    run_dir: Path,
    prototypes: PrototypeSettings | None,
    features: FeatureCache | None = None,
) -> ClassifierStage:
    """The run's classifier: from ``ckpt_path``, else from the classifier cache, else trained
    (and then published to the cache). ``prototypes``/``features`` go to the training.

    The cache entry is produced under a lock, so when parallel jobs of a sweep need the same
    classifier one trains it and the others wait and load it.
    """
    if cfg.ckpt_path:
        return load(Path(cfg.ckpt_path), "ckpt_path", dm, backbone, "checkpoint")
    if not cfg.cache.classifier:
        if cfg.stage in NEEDS_TRAINED:
            raise InputError(f"stage={cfg.stage} needs a trained classifier: give ckpt_path=, or set cache.classifier=true")
        return train(cfg, dm, backbone, run_dir, prototypes, features)
    entry = Path(cfg.cache.dir) / "classifiers" / classifier_key(cfg, dm.content.key)
    cached = entry / "best.ckpt"
    with locked(entry, "classifier"):
        if cached.is_file():
            log.info("classifier: reusing %s, trained with the same config and data (cache.classifier=false retrains)", cached)
            return load(cached, "cache", dm, backbone, "cache")
        for other, recorded in entries_on_other_data(entry):
            log.info(
                "classifier: not reusing %s: trained with this config, but the dataset's %s changed since",
                other, ", ".join(dm.content.changed_since(recorded)),
            )  # fmt: skip
        if cfg.stage in NEEDS_TRAINED:
            raise MissingInput(
                f"stage={cfg.stage}: no classifier trained with this config and data in {entry}; "
                f"run stage=train (or stage=all) first, or give ckpt_path="
            )
        trained = train(cfg, dm, backbone, run_dir, prototypes, features)
        publish_file(Path(trained.provenance.path), cached)
        (entry / "training_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(training_config(cfg))))
        write_json(dm.content.parts, entry / "data.json")
        log.info("classifier: cached as %s", cached)
    return trained
