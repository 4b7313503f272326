"""Seed evaluation of CAM methods as a LightningModule (``trainer.test``)."""

from __future__ import annotations

import time
from typing import Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from lpcam.cams.aggregation import RULES, AggregationRule, official, rule_name
from lpcam.cams.baselines import GRADIENT_FREE, baseline_maps, check_baselines
from lpcam.cams.cam import cam_maps
from lpcam.cams.lpcam import lpcam_maps_by_rule
from lpcam.cams.multiscale import DEFAULT_SCALES, multiscale_features
from lpcam.metrics.segmentation import DEFAULT_THRESHOLDS, SeedConfusion
from lpcam.models.classifier import Classifier
from lpcam.prototypes.store import Prototypes


class CamEvaluator(pl.LightningModule):
    """Extracts CAM and LPCAM (plus any ``compare_rules`` variants of LPCAM, sharing the same
    similarities, and any grad-cam ``baselines`` at their own views) for each batch of the
    evaluation split and accumulates one confusion matrix per method and background threshold.
    Confusions are summed across ranks at epoch end, so the numbers are the same under DDP.

    After ``trainer.test``: ``results`` (method → metrics dict), ``examples`` (the first
    ``num_examples`` images with their maps, for the figure) and ``timings`` (extraction and
    evaluation seconds).
    """

    def __init__(
        self,
        classifier: Classifier,
        prototypes: Prototypes,
        class_names: Sequence[str],
        aggregation: AggregationRule = official,
        compare_rules: Sequence[str] = (),
        baselines: Sequence[str] = (),
        baseline_scales: Sequence[float] = (1.0,),
        baseline_flip: bool = False,
        scales: Sequence[float] = DEFAULT_SCALES,
        flip: bool = True,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        default_threshold: float = 0.15,
        num_examples: int = 4,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.prototypes = prototypes
        self.class_names = list(class_names)
        self.rules: dict[str, AggregationRule] = {"lpcam": aggregation}
        for name in compare_rules:
            if name not in RULES:
                raise ValueError(f"evaluation.compare_rules: unknown rule {name!r}; known: {sorted(RULES)}")
            self.rules[f"lpcam_{name}"] = RULES[name]
        check_baselines(baselines)
        self.baselines = list(dict.fromkeys(baselines))
        self.baseline_scales, self.baseline_flip = tuple(baseline_scales), baseline_flip
        self.scales, self.flip = tuple(scales), flip
        self.thresholds, self.default_threshold = tuple(thresholds), default_threshold
        self.num_examples = num_examples
        self.methods = ["cam", *self.rules, *self.baselines]
        self.confusions = {m: SeedConfusion(len(class_names) + 1, self.thresholds) for m in self.methods}
        self.examples: list[dict] = []
        self.timings = {"extraction": 0.0, "evaluation": 0.0, **{b: 0.0 for b in self.baselines}}
        self.results: dict[str, dict] = {}

    @property
    def aggregation_name(self) -> str:
        return rule_name(self.rules["lpcam"])

    @property
    def needs_gradients(self) -> bool:
        """Whether a baseline backpropagates (the trainer must then run without inference mode)."""
        return any(b not in GRADIENT_FREE for b in self.baselines)

    @torch.no_grad()
    def maps(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """(B, C, H, W) maps of every method for a batch (classes absent from the batch are zero)."""
        size = images.shape[-2:]
        views = multiscale_features(self.classifier.features, images, self.scales, self.flip)
        present = torch.nonzero(labels.sum(0)).flatten().tolist()
        return {
            "cam": cam_maps(views, self.classifier.weights, size),
            **lpcam_maps_by_rule(views, self.prototypes, size, self.rules, classes=present),
        }

    def test_step(self, batch: dict, batch_idx: int) -> None:
        t0 = time.perf_counter()
        maps = self.maps(batch["image"], batch["label"])
        self.timings["extraction"] += time.perf_counter() - t0  # CAM and LPCAM (they share features)
        for name in self.baselines:
            t = time.perf_counter()
            with torch.enable_grad():
                maps[name] = baseline_maps(
                    name, self.classifier, batch["image"], batch["label"], self.baseline_scales, self.baseline_flip
                )
            self.timings[name] += time.perf_counter() - t
        t1 = time.perf_counter()
        for b in range(len(batch["image"])):
            keys = torch.nonzero(batch["label"][b]).flatten()
            for method, m in maps.items():
                self.confusions[method].update(m[b, keys].cpu(), (keys + 1).cpu(), batch["mask"][b].cpu(), batch["parts"][b].cpu())
            if len(self.examples) < self.num_examples:
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
            self.results[method] = conf.results(["background", *self.class_names], self.default_threshold)
