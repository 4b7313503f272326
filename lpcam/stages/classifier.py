"""The classifier stage: a trained multi-label classifier, from ``ckpt_path``, the sweep's
classifier cache, or trained here (its :class:`PrototypeCallback` then builds the prototypes),
resuming an interrupted training of the same config (:mod:`lpcam.stages.resume`)."""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from lpcam import preemption
from lpcam.atomic import atomic_write
from lpcam.cache import (
    FeatureCache, classifier_key, entries_on_other_data, locked, publish_file, secondary_process, training_config,
)  # fmt: skip
from lpcam.data.datamodule import SegmentationDataModule
from lpcam.data.pooled import PooledFeatures
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
from lpcam.stages.resume import AtomicCheckpointIO, TrainingProgress, TrainingRandomness

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
    progress: TrainingProgress | None = None,
) -> ClassifierStage:
    """Fit the classifier, keeping the best checkpoint by validation loss; with ``prototypes``
    settings, its PrototypeCallback then builds the prototypes from that checkpoint. The
    checkpoints stay in ``progress.folder`` (default: ``<run_dir>/checkpoints/in_progress``) until
    the training ends, resumed from where ``progress`` says; then the best one is published as
    ``<run_dir>/checkpoints/best.ckpt``."""
    progress = progress or TrainingProgress.plan(cfg, run_dir / "checkpoints" / "in_progress")
    if progress.resume_from and dm.num_workers > 0:
        log.warning(
            "classifier: dataset.num_workers=%d: the workers' augmentation is not in the checkpoint, so the resumed "
            "epochs draw other augmentations than an uninterrupted run would (num_workers=0 resumes bit for bit)",
            dm.num_workers,
        )
    classifier = instantiate(cfg.model, backbone=backbone, num_classes=dm.num_classes)
    data = training_data(classifier, dm, backbone, cfg.trainer.get("enable_progress_bar", True))
    # the best epoch by validation loss, first (trainer.checkpoint_callback); and every epoch's end
    # as last.ckpt, which a stopped training resumes from (Lightning's save_last saves only when
    # the best improves); without a validation split, the last epoch is the one kept
    checkpoints = [ModelCheckpoint(dirpath=progress.folder, filename="best", monitor="val/loss", mode="min")] if dm.val_split else []
    checkpoints.append(ModelCheckpoint(dirpath=progress.folder, filename="last", enable_version_counter=False))
    timer = TrainingTime()
    builder = PrototypeCallback(run_dir / "prototypes.pt", prototypes, features, images=dm) if prototypes is not None else None
    callbacks = [*checkpoints, timer, TrainingRandomness(), *([builder] if builder else [])]
    with stage_loggers(cfg, "train") as loggers:
        trainer: pl.Trainer = instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
        )
        with warnings.catch_warnings():  # resuming into the folder the checkpoints came from is the point
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            # a frozen backbone or frozen BatchNorm is in eval mode on purpose (Classifier.on_fit_start)
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
            trainer.fit(classifier, datamodule=data, ckpt_path=progress.resume_from)
        preemption.check()  # a stop signal after Lightning's last check: the training is resumable, not published
    path = run_dir / "checkpoints" / "best.ckpt"
    if trainer.is_global_zero:
        publish_file(Path(trainer.checkpoint_callback.best_model_path), path)
    # the best epoch's weights, not the last's (the PrototypeCallback, when there is one, reloaded them already)
    classifier.load_state_dict(torch_load(trainer.checkpoint_callback.best_model_path, "checkpoint")["state_dict"])
    source = "resumed" if progress.resume_from else "trained"
    seconds = timer.seconds + (data.seconds if isinstance(data, PooledFeatures) else 0.0)  # with the feature pass
    return ClassifierStage(
        classifier,
        Provenance(source, str(path), {"train": seconds}),
        builder.prototypes if builder else None,
        builder.provenance if builder else None,
    )


def training_data(
    classifier: Classifier, dm: SegmentationDataModule, backbone: Backbone, progress: bool
) -> SegmentationDataModule | PooledFeatures:
    """What the classifier trains on: the images, or with ``model.freeze_backbone=true`` their
    pooled features, computed once (:mod:`lpcam.data.pooled`; no augmentation). A frozen backbone
    without loaded weights is allowed (random features are a baseline) but said."""
    if not classifier.hparams.freeze_backbone:
        return dm
    if not backbone.pretrained:
        log.warning(
            "classifier: model.freeze_backbone=true on backbone %s without pre-trained weights: only the classifier "
            "learns, on the features of a random network (set backbone.pretrained=true or backbone.weights=PATH)",
            backbone.name,
        )
    log.info("classifier: frozen backbone: only the 1x1 classifier trains, on pooled features computed once (no augmentation)")
    return PooledFeatures(dm, backbone, progress)


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
    classifier one trains it and the others wait and load it; the training checkpoints into the
    entry's ``in_progress/``, so a job stopped while training it is resumed by the next one.
    """
    if cfg.ckpt_path:
        return load(Path(cfg.ckpt_path), "ckpt_path", dm, backbone, "checkpoint")
    if not cfg.cache.classifier:
        if cfg.stage in NEEDS_TRAINED:
            raise InputError(f"stage={cfg.stage} needs a trained classifier: give ckpt_path=, or set cache.classifier=true")
        progress = TrainingProgress.plan(cfg, run_dir / "checkpoints" / "in_progress")
        trained = train(cfg, dm, backbone, run_dir, prototypes, features, progress)
        progress.discard()
        return trained
    entry = Path(cfg.cache.dir) / "classifiers" / classifier_key(cfg, dm.content.key)
    cached = entry / "best.ckpt"
    with locked(entry, "classifier"):
        if cached.is_file():
            log.info("classifier: reusing %s, trained with the same config and data (cache.classifier=false retrains)", cached)
            shutil.rmtree(entry / "in_progress", ignore_errors=True)  # left by a job stopped after publishing
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
        progress = TrainingProgress.plan(cfg, entry / "in_progress")
        trained = train(cfg, dm, backbone, run_dir, prototypes, features, progress)
        if not secondary_process():  # a DDP job's first process publishes
            publish_file(Path(trained.provenance.path), cached)
            text = OmegaConf.to_yaml(OmegaConf.create(training_config(cfg)))
            atomic_write(entry / "training_config.yaml", lambda tmp: tmp.write_text(text))
            write_json(dm.content.parts, entry / "data.json")
            log.info("classifier: cached as %s", cached)
        progress.discard()
    return trained
