"""Rules that turn one class's prototype similarity maps into its LPCAM map.

Each rule takes ``fg`` (B, P, h, w), the cosine similarities to the class prototypes (P ≥ 1),
``bg`` (B, Q, h, w), those to the context prototypes (Q may be 0), and the prototypes' classifier
scores for the class, ``fg_scores`` (P,) and ``bg_scores`` (Q,), which most rules ignore; it returns
(B, h, w). A rule is chosen in config (``lpcam/aggregation=<name>``, one yaml per rule pointing at
its function, with its parameters); adding one is a function here plus a yaml file.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

AggregationRule = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def official(fg: Tensor, bg: Tensor, fg_scores: Tensor | None = None, bg_scores: Tensor | None = None) -> Tensor:
    """The paper's LPCAM: ReLU(mean similarity to class prototypes − mean to context prototypes);
    the class term alone when the class has no context prototype."""
    if bg.shape[1] == 0:
        return fg.mean(1)
    return F.relu(fg.mean(1) - bg.mean(1))


def fg_only(fg: Tensor, bg: Tensor, fg_scores: Tensor | None = None, bg_scores: Tensor | None = None) -> Tensor:
    """LPCAM-F, the paper's ablation: mean similarity to the class prototypes, no context term."""
    return fg.mean(1)


def max(  # noqa: A001 - the rule's config name
    fg: Tensor, bg: Tensor, fg_scores: Tensor | None = None, bg_scores: Tensor | None = None
) -> Tensor:
    """Nearest-prototype rule: ReLU(max similarity to a class prototype − max to a context one).

    Why: with the mean, a position close to *one* prototype (a body) is diluted by its distance to
    all the others (heads); the max keeps it. Subtracting the closest context prototype keeps the
    map positive only where a class part is the best match.
    """
    if bg.shape[1] == 0:
        return fg.amax(1)
    return F.relu(fg.amax(1) - bg.amax(1))


def topk_mean(
    fg: Tensor, bg: Tensor, fg_scores: Tensor | None = None, bg_scores: Tensor | None = None, k: int = 3
) -> Tensor:
    """ReLU(mean of the ``k`` highest class similarities − mean of the ``k`` highest context ones).

    Between ``official`` (k = all) and ``max`` (k = 1): a position must resemble a few prototypes
    of a part, not all of the class's parts at once, and one stray prototype cannot light it alone.
    """
    top_fg = fg.topk(min(k, fg.shape[1]), dim=1).values.mean(1)
    if bg.shape[1] == 0:
        return top_fg
    return F.relu(top_fg - bg.topk(min(k, bg.shape[1]), dim=1).values.mean(1))


def score_weighted(fg: Tensor, bg: Tensor, fg_scores: Tensor, bg_scores: Tensor) -> Tensor:
    """ReLU(score-weighted mean class similarity − weighted mean context similarity).

    A class prototype counts by how surely the classifier calls it the class (its score s), a
    context prototype by how surely it is not (1 − s): centres near the selection thresholds weigh
    less than clear-cut ones. With every score equal it is the official rule.
    """
    w = fg_scores.to(fg) / fg_scores.sum().clamp_min(1e-8)
    term = torch.einsum("bphw,p->bhw", fg, w)
    if bg.shape[1] == 0:
        return term
    v = (1 - bg_scores.to(bg)).clamp_min(0)
    v = v / v.sum() if v.sum() > 0 else torch.full_like(v, 1 / len(v))
    return F.relu(term - torch.einsum("bqhw,q->bhw", bg, v))


RULES: dict[str, AggregationRule] = {
    "official": official,
    "fg_only": fg_only,
    "max": max,
    "topk_mean": topk_mean,
    "score_weighted": score_weighted,
}


def rule_name(rule: AggregationRule) -> str:
    """The config name of a rule, also when Hydra hands it over as a ``functools.partial``."""
    return getattr(rule, "func", rule).__name__
