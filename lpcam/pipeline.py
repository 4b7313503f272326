"""One run, stage by stage: classifier (trained or loaded) → prototypes (built, carried or given) →
evaluation → ``results.json``. ``lpcam.run`` composes the config and calls :func:`run`; each stage
returns what it produced with its :class:`~lpcam.stages.provenance.Provenance`."""

from __future__ import annotations

import logging
import time
from dataclasses import fields
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lpcam import preemption
from lpcam.cache import FeatureCache, features_max_bytes, weights_digest
from lpcam.cams.aggregation import AggregationRule, rule_name
from lpcam.config_schemas import LPCAM_OTHER_KEYS, check_keys
from lpcam.data.datamodule import SegmentationDataModule
from lpcam.errors import InputError, input_error_in
from lpcam.loggers import log_artifact, stage_loggers
from lpcam.models.backbones import Backbone
from lpcam.models.classifier import Classifier
from lpcam.prototypes.settings import PrototypeSettings
from lpcam.prototypes.store import IncompatiblePrototypes, Prototypes
from lpcam.results import SCHEMA, log_results, peak_memory_mb, write_json
from lpcam.stages import classifier as classifier_stage
from lpcam.stages.evaluation import CamEvaluator, EvaluationSettings, build_methods, lpcam_method, planned_methods
from lpcam.stages.export import (
    CamExporter, ExportSettings, check_claim, claim, export_identity, irn_folder, read_manifest, score_export,
    settings_identity,
)  # fmt: skip
from lpcam.stages.prototypes import build_prototypes
from lpcam.stages.provenance import Provenance
from lpcam.stages.resume import resume_setting
from lpcam.viz import cam_figure

log = logging.getLogger(__name__)

STAGES = ("all", "train", "evaluate", "export", "score")


def build_settings(node) -> object:
    """A settings object (or the datamodule) from its config node (Hydra's ``instantiate``); the
    :class:`InputError` its checks raise comes out as itself, not wrapped in Hydra's exception."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = input_error_in(err)
        if cause is None:
            raise
        raise cause from None


def prototype_settings(cfg: DictConfig) -> PrototypeSettings:
    """The ``lpcam`` group's build settings (its other entries are read by other stages)."""
    node = OmegaConf.to_container(cfg.lpcam, resolve=True)
    return build_settings({k: v for k, v in node.items() if k not in LPCAM_OTHER_KEYS})


def hydra_overrides() -> list[str]:
    """The command-line overrides of this job (empty when called outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def given_prototypes(cfg: DictConfig, backbone: Backbone, dm: SegmentationDataModule) -> tuple[Prototypes, Provenance] | None:
    """``lpcam.prototypes_path``, checked against this run before any training, so a wrong file fails at once."""
    path = cfg.lpcam.prototypes_path
    if not path:
        return None
    protos = Prototypes.load(path)
    protos.check_compatible(backbone.name, backbone.layer, backbone.out_channels, dm.class_names, str(path))
    return protos, Provenance("file", str(path))


def check_built_by(protos: Prototypes, trained: classifier_stage.ClassifierStage, path: str) -> None:
    """Refuse ``lpcam.prototypes_path`` built by other weights than the run's classifier (known
    only now, after training or loading); a classifier trained for nothing is named, to be reused."""
    try:
        protos.check_built_by(weights_digest(trained.classifier), f"lpcam.prototypes_path={path}")
    except IncompatiblePrototypes as err:
        if trained.provenance.source != "trained":
            raise
        raise IncompatiblePrototypes(f"{err} (this run's classifier is kept: ckpt_path={trained.provenance.path})") from None


def run_prototypes(
    trained: classifier_stage.ClassifierStage,
    given: tuple[Prototypes, Provenance] | None,
    settings: PrototypeSettings,
    dm: SegmentationDataModule,
    features: FeatureCache | None,
    path: Path,
) -> tuple[Prototypes, Provenance]:
    """The prototypes this run evaluates: the given file, else those that came with the classifier
    when they were built with this run's settings from the same images, else built now."""
    if given is not None:
        return given
    carried = trained.prototypes
    if carried is not None and settings.built(carried.meta) and carried.meta.get("images") == dm.prototype_selection():
        return carried, trained.prototypes_provenance
    protos, seconds = build_prototypes(
        trained.classifier, dm.prototype_dataloader(), dm.class_names, settings, dm.name, features,
        images=dm.prototype_selection(),
    )  # fmt: skip
    return protos, Provenance("built", str(path), seconds)


def results_json(
    cfg: DictConfig,
    dm: SegmentationDataModule,
    backbone: str,
    evaluator: CamEvaluator,
    protos: Prototypes,
    provenance: dict[str, Provenance],
) -> dict:
    """The run's ``results.json`` (schema 2; docs/results-json.md)."""
    built = provenance["prototypes"].seconds
    timings = {
        "train": provenance["classifier"].seconds.get("train", 0.0),
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
        "primary_method": evaluator.primary_method,
        "aggregation": evaluator.aggregation_name,
        "evaluation": evaluation_record(evaluator.settings),
        "prototypes": {
            "settings": {f.name: protos.meta.get(f.name) for f in fields(PrototypeSettings)},  # of the file used
            "images": protos.meta.get("images"),  # the split (and per-class sample) they were built from
            "counts": protos.counts(),
            "halo_share": {name: s.get("halo_share") for name, s in protos.stats.items()},
            "composition": {
                name: {k: s[k] for k in ("class_prototypes", "rejected_fg_centres", "context_prototypes") if k in s}
                for name, s in protos.stats.items()
            },
        },
        "provenance": {stage: p.as_dict() for stage, p in provenance.items()},
        "data": dm.data_report(),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "peak_memory_mb": peak_memory_mb(),
        "overrides": hydra_overrides(),
    }


def evaluation_record(settings: EvaluationSettings) -> dict:
    """How the maps were extracted and scored (results.json's ``evaluation``): the views, the
    rescale and upsampling rules and the default threshold, what two runs' figures depend on."""
    keys = ("scales", "flip", "rescale", "upsample", "default_threshold")
    return {k: list(v) if isinstance(v := getattr(settings, k), tuple) else v for k in keys}


def check_export_method(settings: ExportSettings, aggregation: AggregationRule, evaluation: EvaluationSettings) -> None:
    """``export.method`` among the run's methods, checked before any work (when the names are
    known without the classifier: see :func:`planned_methods`; :func:`export` checks again)."""
    names = planned_methods(aggregation, evaluation)
    if settings.method and names is not None and settings.method not in names:
        raise InputError(f"export.method={settings.method!r}: expected one of this run's methods {names}")


def check_export_target(
    settings: ExportSettings, dm: SegmentationDataModule, aggregation: AggregationRule, evaluation: EvaluationSettings
) -> None:
    """Before any training: ``export.split`` exists, and ``export.dir`` holds no export of other
    settings (its classifier and prototypes are compared once known, in :func:`export`)."""
    split = settings.split or dm.train_split
    if settings.split:
        try:
            dm.dataset(split)
        except InputError as err:
            raise InputError(f"export.split={split}: {err}") from None
    method = settings.method or lpcam_method(rule_name(aggregation))
    check_claim(Path(settings.dir), settings_identity(method, settings, split, dm.name, evaluation))


def inference_trainer(cfg: DictConfig, needs_gradients: bool) -> pl.Trainer:
    """The run's trainer for extracting maps (evaluation, export): no logger, and full precision
    whatever the training precision, since the seed thresholds resolve differences of 0.01."""
    return instantiate(cfg.trainer, logger=False, callbacks=[], precision="32-true", inference_mode=not needs_gradients)


def run(cfg: DictConfig) -> dict | None:
    """Train (or load), build (or load) prototypes, evaluate CAM and LPCAM; return results.json.

    ``stage=train`` stops after the classifier and its prototypes (returns None);
    ``stage=evaluate`` and ``stage=export`` require a trained classifier (``ckpt_path`` or the
    cache); ``stage=export`` writes the maps instead of scoring them (returns None); ``stage=score``
    scores exported files. Every setting is checked before any data is generated or any training
    starts."""
    if cfg.stage not in STAGES:
        raise InputError(f"stage={cfg.stage!r}: expected one of {', '.join(STAGES)}")
    check_keys(cfg)
    settings = prototype_settings(cfg)
    evaluation: EvaluationSettings = build_settings(cfg.evaluation)
    exporting: ExportSettings = build_settings(cfg.export)
    if cfg.stage == "export" and not exporting.dir:
        raise InputError("stage=export: give export.dir=DIR (where the files go)")
    resume_setting(cfg)
    features_max_bytes(cfg)
    aggregation = instantiate(cfg.lpcam.aggregation)
    check_export_method(exporting, aggregation, evaluation)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    dm: SegmentationDataModule = build_settings(cfg.dataset)  # its dataset.* settings checked, as the others'
    dm.check_cache_dir = Path(cfg.cache.dir) / "data_checks"  # what the preflight read, per file (reruns stat only)
    dm.prepare_data()
    if cfg.stage == "score":  # exported maps against the ground truth: no classifier needed
        return score_stage(cfg, dm, evaluation, exporting, run_dir)
    if exporting.dir:
        check_export_target(exporting, dm, aggregation, evaluation)

    backbone: Backbone = instantiate(cfg.backbone)
    given = given_prototypes(cfg, backbone, dm)
    features = FeatureCache.for_run(cfg, lambda: dm.prototype_content_key)
    trained = classifier_stage.obtain(cfg, dm, backbone, run_dir, None if given else settings, features)
    if given is not None:  # only now is the classifier known: prototypes of other weights are refused
        check_built_by(given[0], trained, cfg.lpcam.prototypes_path)
    protos, protos_provenance = run_prototypes(trained, given, settings, dm, features, run_dir / "prototypes.pt")
    if not (run_dir / "prototypes.pt").is_file():
        protos.save(run_dir / "prototypes.pt")
    if cfg.stage == "train":
        log.info("stage=train: classifier and prototypes ready (%s)", run_dir / "prototypes.pt")
        return None

    if cfg.stage == "export":
        export(cfg, dm, trained.classifier, protos, aggregation, evaluation, exporting, evaluation.default_threshold)
        return None

    evaluator = CamEvaluator(trained.classifier, protos, dm.class_names, aggregation, evaluation)
    with stage_loggers(cfg, "evaluate") as loggers:
        inference_trainer(cfg, evaluator.needs_gradients).test(evaluator, datamodule=dm, verbose=False)
        preemption.check()  # a stop signal after the last batch: stop before reporting
        provenance = {"classifier": trained.provenance, "prototypes": protos_provenance}
        results = results_json(cfg, dm, backbone.name, evaluator, protos, provenance)
        write_json(results, run_dir / "results.json")
        figure = cam_figure(evaluator.examples, evaluator.methods, dm.class_names, run_dir / "cams.png")
        log_results(loggers, results, figure)
        log_artifact(loggers, run_dir / "prototypes.pt", f"prototypes-{dm.name}-{backbone.name}", "prototypes")
    log.info("results: %s", run_dir / "results.json")
    if exporting.dir:  # stage=all with export.dir: the seeds at the evaluation's best threshold
        method = exporting.method or evaluator.primary_method
        best = results["methods"].get(method, {}).get("best", {}).get("threshold", evaluation.default_threshold)
        export(cfg, dm, trained.classifier, protos, aggregation, evaluation, exporting, best)
    return results


def score_stage(
    cfg: DictConfig, dm: SegmentationDataModule, evaluation: EvaluationSettings, settings: ExportSettings, run_dir: Path
) -> dict:
    """``stage=score export.dir=DIR``: the seed metrics of the ``irn`` files of an export, by the
    same evaluation as the in-memory one (the round trip), written to ``results.json``."""
    if not settings.dir:
        raise InputError("stage=score: give export.dir=DIR (a folder exported with the irn format)")
    directory = Path(settings.dir)
    manifest = read_manifest(directory)
    if "irn" not in manifest.get("formats", []):
        raise InputError(f"export.dir={directory}: it holds no irn files (formats {manifest.get('formats')}); export them first")
    split = settings.split or dm.eval_split
    dm.preflight([split])
    t0 = time.perf_counter()
    folder = irn_folder(directory, manifest)
    scores = score_export(folder, dm.dataset(split), dm.class_names, evaluation.thresholds, evaluation.default_threshold)
    results = {
        "schema": SCHEMA,
        "dataset": dm.name,
        "split": split,
        "backbone": manifest.get("prototype_settings", {}).get("backbone", "unknown"),
        "seed": cfg.seed,
        "methods": {manifest["method"]: scores},
        "primary_method": manifest["method"],
        "provenance": {"maps": Provenance("file", str(directory)).as_dict()},
        "data": dm.data_report(),
        "timings_s": {"evaluation": round(time.perf_counter() - t0, 2)},
        "peak_memory_mb": peak_memory_mb(),
        "overrides": hydra_overrides(),
    }
    write_json(results, run_dir / "results.json")
    return results


def export(
    cfg: DictConfig,
    dm: SegmentationDataModule,
    classifier: Classifier,
    protos: Prototypes,
    aggregation: AggregationRule,
    evaluation: EvaluationSettings,
    settings: ExportSettings,
    default_threshold: float,
) -> Path:
    """Write the chosen method's maps of every image of the split into ``export.dir`` (see
    :mod:`lpcam.stages.export`); returns the folder."""
    methods = build_methods(classifier, protos, aggregation, evaluation)
    name = settings.method or lpcam_method(rule_name(aggregation))
    if name not in methods:
        raise InputError(f"export.method={name!r}: expected one of this run's methods {list(methods)}")
    split = settings.split or dm.train_split
    threshold = settings.threshold if settings.threshold is not None else default_threshold
    directory = Path(settings.dir)
    claim(directory, export_identity(name, settings, split, dm.name, classifier, protos, evaluation, threshold), settings.formats)
    loader = dm.split_dataloader(split)
    exporter = CamExporter(
        classifier, methods[name], [str(i) for i in loader.dataset.ids], settings.writers(threshold), directory, evaluation
    )
    inference_trainer(cfg, methods[name].needs_gradients).predict(exporter, dataloaders=loader, return_predictions=False)
    preemption.check()
    rate = exporter.written / exporter.seconds if exporter.seconds else 0.0
    log.info(
        "export: %d images written (%d already there) to %s as %s, %.1f images/s",
        exporter.written, exporter.skipped, directory, ",".join(settings.formats), rate,
    )  # fmt: skip
    return directory
