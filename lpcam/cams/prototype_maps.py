"""LPCAM maps: cosine similarity of the unpooled features to each class's local prototypes."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from lpcam.cams.aggregation import AggregationRule, official
from lpcam.cams.base import Batch, CamMethod
from lpcam.cams.multiscale import merge_scales
from lpcam.prototypes.store import Prototypes


def prototype_similarities(features: Tensor, prototypes: Tensor) -> Tensor:
    """(B, P, h, w) cosine similarity of every position's feature to every prototype."""
    return torch.einsum("bdhw,pd->bphw", F.normalize(features, dim=1), F.normalize(prototypes, dim=1))


def lpcam_maps_by_rule(
    feature_views: list[Tensor],
    prototypes: Prototypes,
    size: tuple[int, int],
    rules: Mapping[str, AggregationRule],
    classes: Iterable[int] | None = None,
) -> dict[str, Tensor]:
    """(B, C, H, W) LPCAM maps for each named rule, from per-scale (V, B, D, h, w) features.

    As in the official code, the features of a scale and its flip are summed before the
    similarity. All prototypes of all classes are compared in one einsum per scale, and every rule
    reduces those same similarities, so comparing rules costs no extra feature work. ``classes``
    limits the work to the classes present in the batch (the others stay zero).
    """
    sims = similarities_per_scale(feature_views, prototypes)
    return {name: merge_scales(rule_per_scale(sims, prototypes, rule, classes), size) for name, rule in rules.items()}


def similarities_per_scale(feature_views: list[Tensor], prototypes: Prototypes) -> list[Tensor]:
    """Per scale, (B, P, h, w) similarities of the summed views to every prototype of the bank."""
    bank = prototypes.bank()[0].to(feature_views[0])
    return [prototype_similarities(views.sum(0), bank) for views in feature_views]


def rule_per_scale(
    sims: list[Tensor], prototypes: Prototypes, rule: AggregationRule, classes: Iterable[int] | None = None
) -> list[Tensor]:
    """Per scale, (B, C, h, w) unnormalised maps of one rule over the similarities."""
    _, fg_slices, bg_slices = prototypes.bank()
    scores = prototypes.bank_scores().to(sims[0])
    num_classes = len(fg_slices)
    classes = list(range(num_classes) if classes is None else classes)
    out = []
    for scale in sims:
        maps = scale.new_zeros(scale.shape[0], num_classes, *scale.shape[2:])
        for c in classes:
            fg, bg = fg_slices[c], bg_slices[c]
            if fg.stop == fg.start:  # a class without prototypes (see cluster_and_select): empty map
                continue
            maps[:, c] = rule(scale[:, fg], scale[:, bg], scores[fg], scores[bg])
        out.append(maps)
    return out


class Lpcam(CamMethod):
    """LPCAM under one aggregation rule. The rules of one batch share the similarities (memoised
    in the batch per prototype set), so scoring several rules costs one comparison."""

    def __init__(self, prototypes: Prototypes, rule: AggregationRule = official, name: str = "lpcam_official") -> None:
        self.prototypes, self.rule, self.name = prototypes, rule, name

    def per_scale(self, batch: Batch) -> list[Tensor]:
        key = ("lpcam_similarities", id(self.prototypes))
        if key not in batch.memo:
            batch.memo[key] = similarities_per_scale(batch.features, self.prototypes)
        return rule_per_scale(batch.memo[key], self.prototypes, self.rule, batch.present)


def lpcam_maps(
    feature_views: list[Tensor],
    prototypes: Prototypes,
    size: tuple[int, int],
    rule: AggregationRule = official,
    classes: Iterable[int] | None = None,
) -> Tensor:
    """(B, C, H, W) LPCAM maps under one aggregation rule (see :func:`lpcam_maps_by_rule`)."""
    return lpcam_maps_by_rule(feature_views, prototypes, size, {"lpcam": rule}, classes)["lpcam"]
