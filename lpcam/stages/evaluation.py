"""The evaluation stage: CAM, LPCAM and the baselines scored as seeds (``trainer.test``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from lpcam.cams.aggregation import RULES, AggregationRule, official, rule_name
from lpcam.cams.base import Batch, CamMethod
from lpcam.cams.baselines import BASELINES, GradCamBaseline
from lpcam.cams.cam import Cam
from lpcam.cams.multiscale import DEFAULT_SCALES, RESCALES, UPSAMPLES
from lpcam.cams.prototype_maps import Lpcam
from lpcam.errors import InputError
from lpcam.metrics.segmentation import DEFAULT_THRESHOLDS, SeedConfusion
from lpcam.models.classifier import Classifier
from lpcam.prototypes.store import Prototypes


@dataclass(frozen=True)
class EvaluationSettings:
    """How the maps are extracted and scored (the ``evaluation`` config group, built by Hydra).

    Checked when built, so an impossible setting is refused before any data is generated or any
    classifier trained; lists become tuples.
    """

    scales: tuple[float, ...] = DEFAULT_SCALES  # IRN's test-time scales
    flip: bool = True  # each scale with its mirror image
    rescale: str = "pil_bicubic"  # the image at another scale: pil_bicubic (8-bit, IRN's loader) | bilinear (the tensor)
    upsample: str = "padded"  # each scale's map to the image: padded (to a multiple of 16, cropped: IRN's) | direct
    default_threshold: float = 0.15  # IRN's; the best threshold is reported too
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS  # every background threshold scored, in one pass
    compare_rules: tuple[str, ...] = ()  # extra LPCAM rules scored on the same similarities
    baselines: tuple[str, ...] = ()  # grad-cam methods scored beside (the method group sets them)
    baseline_scales: tuple[float, ...] = (1.0,)  # the baselines' views: one scale, as the package is used
    baseline_flip: bool = False  # each baseline scale with its mirror image
    num_examples: int = 4  # images in the figure
    methods: tuple[Callable[..., CamMethod], ...] = ()  # more methods: factories(classifier=, prototypes=)

    def __post_init__(self) -> None:
        for f in fields(self):
            if isinstance(f.default, tuple):  # Hydra hands lists over
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        for name, ok, expected in self._checks():
            if not ok:
                raise InputError(f"evaluation.{name}={getattr(self, name)!r}: expected {expected}")

    def _checks(self) -> list[tuple[str, bool, str]]:
        on_grid = any(math.isclose(t, self.default_threshold, abs_tol=1e-9) for t in self.thresholds)
        return [
            ("scales", len(self.scales) > 0 and all(s > 0 for s in self.scales), "a non-empty list of positive scales"),
            ("rescale", self.rescale in RESCALES, " or ".join(RESCALES)),
            ("upsample", self.upsample in UPSAMPLES, " or ".join(UPSAMPLES)),
            ("thresholds", len(self.thresholds) > 0 and all(0 < t < 1 for t in self.thresholds), "thresholds in (0, 1)"),
            ("default_threshold", on_grid, f"one of the thresholds {list(self.thresholds)}"),
            ("compare_rules", set(self.compare_rules) <= set(RULES), f"rules among {sorted(RULES)}"),
            ("baselines", set(self.baselines) <= set(BASELINES), f"methods among {sorted(BASELINES)}"),
            ("baseline_scales", len(self.baseline_scales) > 0 and all(s > 0 for s in self.baseline_scales),
             "a non-empty list of positive scales"),
            ("num_examples", isinstance(self.num_examples, int) and self.num_examples >= 0, "a whole number ≥ 0"),
            ("methods", all(callable(m) for m in self.methods), "method factories (_target_ and _partial_: true)"),
        ]  # fmt: skip


def lpcam_method(rule: str) -> str:
    """The results key of the LPCAM maps under an aggregation rule (``lpcam_official``, ...)."""
    return f"lpcam_{rule}"


def planned_methods(aggregation: AggregationRule, settings: EvaluationSettings) -> list[str] | None:
    """The names :func:`build_methods` will give, known before any classifier exists (to check
    ``export.method`` at once); None when ``evaluation.methods`` adds methods only their
    factories can name."""
    if settings.methods:
        return None
    rules = [rule_name(aggregation), *settings.compare_rules]
    return list(dict.fromkeys(["cam", *map(lpcam_method, rules), *settings.baselines]))


def build_methods(
    classifier: Classifier, prototypes: Prototypes, aggregation: AggregationRule, settings: EvaluationSettings
) -> dict[str, CamMethod]:
    """The run's CAM methods by results key: ``cam``, the configured LPCAM rule, the other
    ``compare_rules`` (a rule equal to the configured one is not repeated), the baselines."""
    primary = lpcam_method(rule_name(aggregation))
    rules: dict[str, AggregationRule] = {primary: aggregation}
    for name in settings.compare_rules:
        rules.setdefault(lpcam_method(name), RULES[name])
    methods: list[CamMethod] = [Cam(classifier)]
    methods += [Lpcam(prototypes, rule, name) for name, rule in rules.items()]
    methods += [
        GradCamBaseline(name, classifier, settings.baseline_scales, settings.baseline_flip)
        for name in dict.fromkeys(settings.baselines)
    ]
    methods += [factory(classifier=classifier, prototypes=prototypes) for factory in settings.methods]
    by_name: dict[str, CamMethod] = {}
    for m in methods:
        if not isinstance(m, CamMethod) or m.name in by_name:
            raise InputError(f"evaluation.methods: {m!r} is not a CamMethod or repeats the name {getattr(m, 'name', '?')!r}")
        by_name[m.name] = m
    return by_name


def feature_batch(classifier: Classifier, images: Tensor, labels: Tensor, settings: EvaluationSettings) -> Batch:
    """The context the methods of one batch share: the classifier's features at the test views."""
    return Batch(images, labels, classifier.features, settings.scales, settings.flip, settings.rescale, settings.upsample)


class CamEvaluator(pl.LightningModule):
    """Extracts CAM and LPCAM (plus any ``compare_rules`` variants of LPCAM, sharing the same
    similarities, and any grad-cam ``baselines`` at their own views) for each batch of the
    evaluation split and accumulates one confusion matrix per method and background threshold.
    Confusions are summed across ranks at epoch end, so the numbers are the same under DDP.

    Methods are named ``cam``, ``lpcam_<rule>`` (the configured rule, ``primary_method``, first)
    and the baselines' names. After ``trainer.test``: ``results`` (method → metrics dict),
    ``examples`` (the first ``num_examples`` images with their maps, for the figure) and
    ``timings`` (extraction and evaluation seconds).
    """

    def __init__(
        self,
        classifier: Classifier,
        prototypes: Prototypes,
        class_names: Sequence[str],
        aggregation: AggregationRule = official,
        settings: EvaluationSettings = EvaluationSettings(),
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.class_names = list(class_names)
        self.settings = settings
        self.aggregation_name = rule_name(aggregation)
        self.primary_method = lpcam_method(self.aggregation_name)
        self.cam_methods = build_methods(classifier, prototypes, aggregation, settings)
        self.methods = list(self.cam_methods)
        self.baselines = [m.name for m in self.cam_methods.values() if isinstance(m, GradCamBaseline)]
        self.confusions = {m: SeedConfusion(len(class_names) + 1, settings.thresholds) for m in self.methods}
        self.examples: list[dict] = []
        self.timings = {"extraction": 0.0, "evaluation": 0.0, **{b: 0.0 for b in self.baselines}}
        self.results: dict[str, dict] = {}

    @property
    def needs_gradients(self) -> bool:
        """Whether a method backpropagates (the trainer must then run without inference mode)."""
        return any(m.needs_gradients for m in self.cam_methods.values())

    def maps(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """(B, C, H, W) maps of every method for a batch (classes absent from the batch are zero);
        times the feature-based methods together (they share one forward pass) and each baseline."""
        batch = feature_batch(self.classifier, images, labels, self.settings)
        maps = {}
        for name, method in self.cam_methods.items():
            t = time.perf_counter()
            with torch.no_grad():
                maps[name] = method.maps(batch)
            self.timings[name if name in self.baselines else "extraction"] += time.perf_counter() - t
        return maps

    def test_step(self, batch: dict, batch_idx: int) -> None:
        maps = self.maps(batch["image"], batch["label"])
        t1 = time.perf_counter()
        for b in range(len(batch["image"])):
            keys = torch.nonzero(batch["label"][b]).flatten()
            for method, m in maps.items():
                self.confusions[method].update(m[b, keys].cpu(), (keys + 1).cpu(), batch["mask"][b].cpu(), batch["parts"][b].cpu())
            if len(self.examples) < self.settings.num_examples:
                self.examples.append(
                    {
                        "image": batch["image"][b].cpu(),
                        "mask": batch["mask"][b].cpu(),
                        "keys": (keys + 1).cpu(),
                        **{method: m[b, keys].cpu() for method, m in maps.items()},
                    }
                )
        self.timings["evaluation"] += time.perf_counter() - t1

    def on_test_epoch_end(self) -> None:
        for method, conf in self.confusions.items():
            state = {k: self.trainer.strategy.reduce(v.to(self.device), reduce_op="sum").cpu() for k, v in conf.state().items()}
            conf.load_state(state)
            self.results[method] = conf.results(["background", *self.class_names], self.settings.default_threshold)
