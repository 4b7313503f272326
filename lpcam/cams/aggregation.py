"""Rules that turn one class's prototype similarity maps into its LPCAM map.

Each rule takes ``fg`` (B, P, h, w), the cosine similarities to the class prototypes (P ≥ 1), and
``bg`` (B, Q, h, w), those to the context prototypes (Q may be 0), and returns (B, h, w). A rule is
chosen in config (``lpcam/aggregation=<name>``, one yaml per rule pointing at its function); adding
one is a function here plus a yaml file.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

AggregationRule = Callable[[Tensor, Tensor], Tensor]


def official(fg: Tensor, bg: Tensor) -> Tensor:
    """The paper's LPCAM: ReLU(mean similarity to class prototypes − mean to context prototypes);
    the class term alone when the class has no context prototype."""
    if bg.shape[1] == 0:
        return fg.mean(1)
    return F.relu(fg.mean(1) - bg.mean(1))


def fg_only(fg: Tensor, bg: Tensor) -> Tensor:
    """LPCAM-F, the paper's ablation: mean similarity to the class prototypes, no context term."""
    return fg.mean(1)


def max(fg: Tensor, bg: Tensor) -> Tensor:  # noqa: A001 - the rule's config name
    """Nearest-prototype rule: ReLU(max similarity to a class prototype − max to a context one).

    Why: with the mean, a position close to *one* prototype (a body) is diluted by its distance to
    all the others (heads); the max keeps it. Subtracting the closest context prototype keeps the
    map positive only where a class part is the best match.
    """
    if bg.shape[1] == 0:
        return fg.amax(1)
    return F.relu(fg.amax(1) - bg.amax(1))


RULES: dict[str, AggregationRule] = {"official": official, "fg_only": fg_only, "max": max}


def rule_name(rule: AggregationRule) -> str:
    """The config name of a rule, also when Hydra hands it over as a ``functools.partial``."""
    return getattr(rule, "func", rule).__name__
