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

from lpcam.cache import classifier_key, digest, locked, publish_file, training_config
from lpcam.callbacks.prototypes import CHECKPOINT_KEY, PrototypeCallback
from lpcam.data.datamodule import SegmentationDataModule
from lpcam.errors import InputError, MissingInput
from lpcam.evaluator import CamEvaluator
from lpcam.loggers import log_artifact, stage_loggers
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


STAGES = ("all", "train", "evaluate")


def cache_options(cfg: DictConfig) -> dict:
    """Where :func:`build_prototypes` shares its feature pool with the sweep's other jobs."""
    return {
        "feature_cache": cfg.cache.dir if cfg.cache.features else None,
        "dataset_key": digest(training_config(cfg)["dataset"]),
    }


def check_config(cfg: DictConfig) -> None:
    """Refuse settings that cannot work before any work is done, naming the field and the range."""
    if cfg.stage not in STAGES:
        raise InputError(f"stage={cfg.stage!r}: expected one of {', '.join(STAGES)}")
    lp = cfg.lpcam
    checks = [
        ("lpcam.k", isinstance(lp.k, int) and lp.k >= 1, "a whole number of centres ≥ 1"),
        ("lpcam.tau", 0 < lp.tau < 1, "a CAM threshold in (0, 1)"),
        ("lpcam.mu_fg", 0 <= lp.mu_fg < 1, "a score threshold in [0, 1)"),
        ("lpcam.mu_bg", 0 < lp.mu_bg <= 1, "a score threshold in (0, 1]"),
        ("lpcam.context_min", 0 <= lp.context_min < lp.mu_bg, "a score in [0, lpcam.mu_bg)"),
        ("lpcam.score", lp.score in ("softmax", "sigmoid"), "softmax or sigmoid"),
        ("lpcam.max_features_per_class", lp.max_features_per_class >= lp.k, "at least lpcam.k"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise InputError(f"{name}={OmegaConf.select(cfg, name)!r}: expected {expected}")


def hydra_overrides() -> list[str]:
    """The command-line overrides of this job (empty when called outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def train_stage(
    cfg: DictConfig, dm: SegmentationDataModule, backbone: Backbone, run_dir: Path, build: bool = True
) -> tuple[Classifier, Prototypes | None, float]:
    """Fit the classifier; unless ``build`` is off, its PrototypeCallback builds the prototypes
    from the best checkpoint. Returns the training seconds without the prototype build."""
    classifier = instantiate(cfg.model, backbone=backbone, num_classes=dm.num_classes)
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/loss", mode="min")
    ]
    if build:
        settings = {**prototype_settings(cfg), **cache_options(cfg)}
        callbacks.append(PrototypeCallback(run_dir / "prototypes.pt", settings))
    with stage_loggers(cfg, "train") as loggers:
        trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        t0 = time.perf_counter()
        trainer.fit(classifier, datamodule=dm)
    protos: Prototypes | None = getattr(classifier, "prototypes", None)
    build_s = sum(protos.meta["timings_s"].values()) if protos is not None else 0.0
    return classifier, protos, time.perf_counter() - t0 - build_s


def load_classifier(path: Path, field: str, dm: SegmentationDataModule, backbone: Backbone) -> tuple[Classifier, Prototypes | None]:
    """A trained classifier from a checkpoint (and the prototypes it carries, if any)."""
    if not path.is_file():
        raise MissingInput(f"{field}={path}: no such checkpoint")
    classifier = Classifier.load_from_checkpoint(path, map_location="cpu", backbone=backbone)
    if classifier.hparams.num_classes != dm.num_classes:
        raise InputError(
            f"{field}={path}: the classifier has {classifier.hparams.num_classes} classes, "
            f"dataset {dm.name} has {dm.num_classes}"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    protos = Prototypes.from_dict(ckpt[CHECKPOINT_KEY], str(path)) if CHECKPOINT_KEY in ckpt else None
    return classifier, protos


def obtain_classifier(
    cfg: DictConfig, dm: SegmentationDataModule, backbone: Backbone, run_dir: Path, build: bool
) -> tuple[Classifier, Prototypes | None, float]:
    """The run's classifier: from ``ckpt_path``, else from the classifier cache, else trained
    (and then published to the cache). Returns it, the prototypes it carries, and training seconds.

    The cache entry is produced under a lock, so when parallel jobs of a sweep need the same
    classifier one trains it and the others wait and load it.
    """
    if cfg.ckpt_path:
        return (*load_classifier(Path(cfg.ckpt_path), "ckpt_path", dm, backbone), 0.0)
    if not cfg.cache.classifier:
        if cfg.stage == "evaluate":
            raise InputError("stage=evaluate needs a trained classifier: give ckpt_path=, or set cache.classifier=true")
        return train_stage(cfg, dm, backbone, run_dir, build)
    entry = Path(cfg.cache.dir) / "classifiers" / classifier_key(cfg)
    cached = entry / "best.ckpt"
    with locked(entry, "classifier"):
        if cached.is_file():
            log.info("classifier: reusing %s, trained with the same config (cache.classifier=false retrains)", cached)
            return (*load_classifier(cached, "cache", dm, backbone), 0.0)
        if cfg.stage == "evaluate":
            raise MissingInput(
                f"stage=evaluate: no classifier trained with this config in {entry}; "
                f"run stage=train (or stage=all) first, or give ckpt_path="
            )
        classifier, protos, train_s = train_stage(cfg, dm, backbone, run_dir, build)
        publish_file(run_dir / "checkpoints" / "best.ckpt", cached)
        (entry / "training_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(training_config(cfg))))
        log.info("classifier: cached as %s", cached)
    return classifier, protos, train_s


def prototypes_for_run(
    cfg: DictConfig,
    dm: SegmentationDataModule,
    classifier: Classifier,
    carried: Prototypes | None,
    given: Prototypes | None,
    carried_built_here: bool,
) -> tuple[Prototypes, dict]:
    """The prototypes this run evaluates: the given file, else those the classifier carries when
    they were built with this run's settings, else built now. Also returns the timings of a build
    done in this run (by this function, or by the callback when ``carried_built_here``), else {}."""
    if given is not None:
        return given, {}
    if carried is not None and all(carried.meta.get(k) == v for k, v in prototype_settings(cfg).items()):
        return carried, carried.meta["timings_s"] if carried_built_here else {}
    protos = build_prototypes(
        classifier, dm.prototype_dataloader(), dm.class_names, dm.name, **prototype_settings(cfg), **cache_options(cfg)
    )
    return protos, protos.meta["timings_s"]


def results_json(
    cfg: DictConfig, dm: SegmentationDataModule, backbone: str, evaluator: CamEvaluator, protos: Prototypes, train_s: float, built: dict
) -> dict:
    """The run's ``results.json`` (schema in shared/DESIGN.md, extra diagnostics welcome)."""
    lpcam = cfg.lpcam
    timings = {
        "train": train_s,
        "features": built.get("features", 0.0),
        "clustering": built.get("clustering", 0.0),
        "extraction": evaluator.timings["extraction"],  # CAM and LPCAM together (shared features)
        "evaluation": evaluator.timings["evaluation"],
        **{f"extraction_{b}": evaluator.timings[b] for b in evaluator.baselines},
    }
    return {
        "schema": SCHEMA,
        "dataset": dm.name,
        "split": dm.eval_split,
        "backbone": backbone,
        "seed": cfg.seed,
        "methods": evaluator.results,
        "lpcam": {
            "k": lpcam.k,
            "tau": lpcam.tau,
            "mu_fg": lpcam.mu_fg,
            "mu_bg": lpcam.mu_bg,
            "aggregation": evaluator.aggregation_name,
            "score": lpcam.score,
            "prototypes": protos.counts(),
            "halo_share": {name: s.get("halo_share") for name, s in protos.stats.items()},
            "prototype_parts": {
                name: {k: s[k] for k in ("class_prototypes", "rejected_fg_centres", "context_prototypes") if k in s}
                for name, s in protos.stats.items()
            },
        },
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "peak_memory_mb": peak_memory_mb(),
        "overrides": hydra_overrides(),
    }


def run(cfg: DictConfig) -> dict | None:
    """Train (or load), build (or load) prototypes, evaluate CAM and LPCAM; return results.json.

    ``stage=train`` stops after the classifier and its prototypes (returns None);
    ``stage=evaluate`` requires a trained classifier (``ckpt_path`` or the cache)."""
    check_config(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    dm: SegmentationDataModule = instantiate(cfg.dataset)
    dm.prepare_data()

    backbone: Backbone = instantiate(cfg.backbone)
    given = None
    if cfg.lpcam.prototypes_path:  # checked before any training, so a wrong file fails at once
        given = Prototypes.load(cfg.lpcam.prototypes_path)
        given.check_compatible(backbone.name, backbone.layer, backbone.out_channels, dm.class_names, str(cfg.lpcam.prototypes_path))
    classifier, carried, train_s = obtain_classifier(cfg, dm, backbone, run_dir, build=given is None)
    protos, built = prototypes_for_run(cfg, dm, classifier, carried, given, carried_built_here=train_s > 0)
    if not (run_dir / "prototypes.pt").is_file():
        protos.save(run_dir / "prototypes.pt")
    if cfg.stage == "train":
        log.info("stage=train: classifier and prototypes ready (%s)", run_dir / "prototypes.pt")
        return None

    evaluator = CamEvaluator(
        classifier,
        protos,
        dm.class_names,
        aggregation=instantiate(cfg.lpcam.aggregation),
        **OmegaConf.to_container(cfg.evaluation, resolve=True),
    )
    with stage_loggers(cfg, "evaluate") as loggers:
        # CAMs in full precision whatever the training precision: thresholds resolve differences of 0.01
        tester: pl.Trainer = instantiate(
            cfg.trainer, logger=False, callbacks=[], precision="32-true", inference_mode=not evaluator.needs_gradients
        )
        tester.test(evaluator, datamodule=dm, verbose=False)
        results = results_json(cfg, dm, backbone.name, evaluator, protos, train_s, built)
        write_json(results, run_dir / "results.json")
        figure = cam_figure(evaluator.examples, evaluator.methods, dm.class_names, run_dir / "cams.png")
        log_results(loggers, results, figure)
        log_artifact(loggers, run_dir / "prototypes.pt", f"prototypes-{dm.name}-{backbone.name}", "prototypes")
    log.info("results: %s", run_dir / "results.json")
    return results
