"""LPCAM maps: cosine similarity of the unpooled features to each class's local prototypes."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from lpcam.cams.aggregation import AggregationRule, official
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
    bank, fg_slices, bg_slices = prototypes.bank()
    bank = bank.to(feature_views[0])
    scores = prototypes.bank_scores().to(bank)
    num_classes = len(fg_slices)
    classes = list(range(num_classes) if classes is None else classes)
    per_scale: dict[str, list[Tensor]] = {name: [] for name in rules}
    for views in feature_views:
        sims = prototype_similarities(views.sum(0), bank)
        for name, rule in rules.items():
            out = sims.new_zeros(sims.shape[0], num_classes, *sims.shape[2:])
            for c in classes:
                fg, bg = fg_slices[c], bg_slices[c]
                if fg.stop == fg.start:  # a class without prototypes (see cluster_and_select): empty map
                    continue
                out[:, c] = rule(sims[:, fg], sims[:, bg], scores[fg], scores[bg])
            per_scale[name].append(out)
    return {name: merge_scales(maps, size) for name, maps in per_scale.items()}


def lpcam_maps(
    feature_views: list[Tensor],
    prototypes: Prototypes,
    size: tuple[int, int],
    rule: AggregationRule = official,
    classes: Iterable[int] | None = None,
) -> Tensor:
    """(B, C, H, W) LPCAM maps under one aggregation rule (see :func:`lpcam_maps_by_rule`)."""
    return lpcam_maps_by_rule(feature_views, prototypes, size, {"lpcam": rule}, classes)["lpcam"]
