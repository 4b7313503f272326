"""IRN's inter-pixel affinity loss: what trains the class-boundary map from IR labels.

IR labels (``cam_to_ir_label``: confident foreground classes, confident background 0, the rest
255) give, for each pair of positions within ``radius`` (IRN trains at radius 10, stride 4):

* a positive pair: both confidently background (``bg``) or both the same class (``fg``);
* a negative pair: two different confident labels;
* no label: either side is 255, or the partner lies beyond the image.

With a_ij the affinity the boundary map B implies (:func:`lpcam.refine.random_walk.affinities`:
one minus the strongest boundary on the path), IRN's loss is

    L = ½ (½ L_bg + ½ L_fg) + ½ L_neg,   L_pos = mean over positive pairs of −log(a_ij + 1e−5),
                                          L_neg = mean over negative pairs of −log(1 + 1e−5 − a_ij)

so a boundary rises between differently labelled positions and falls within a region. IRN keeps
only pairs whose source lies ``radius − 1`` positions from the bottom and side borders (so that
every partner is inside); here every pair inside the image counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lpcam.refine.random_walk import shifted, affinities, offsets

IGNORE = 255
EPS = 1e-5


@dataclass(frozen=True)
class PairLabels:
    """Masks over (offsets, ..., H, W): which pairs are positive (background, foreground) or negative."""

    bg_pos: Tensor
    fg_pos: Tensor
    neg: Tensor


def pair_labels(labels: Tensor, radius: int = 10, ignore: int = IGNORE) -> PairLabels:
    """The pair classes of IR labels ``labels`` (..., H, W) for every half-plane offset."""
    partners = torch.stack([shifted(labels, dy, dx, fill=ignore) for (dy, dx), _ in offsets(radius)])
    source = labels.expand_as(partners)
    valid = (source != ignore) & (partners != ignore)
    equal = source == partners
    return PairLabels(bg_pos=valid & equal & (source == 0), fg_pos=valid & equal & (source > 0), neg=valid & ~equal)


def _masked_mean(loss: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / (mask.sum() + EPS)


def affinity_loss(boundary: Tensor, labels: Tensor, radius: int = 10) -> Tensor:
    """IRN's affinity loss of boundary probabilities ``boundary`` (..., H, W) against IR labels of
    the same size (long, ``IGNORE`` where unsure)."""
    if boundary.shape != labels.shape:
        raise ValueError(f"boundary {tuple(boundary.shape)} and labels {tuple(labels.shape)} differ in size")
    aff = affinities(boundary, radius)
    pairs = pair_labels(labels, radius)
    pos = -torch.log(aff + EPS)
    neg = -torch.log(1.0 + EPS - aff)
    positive = _masked_mean(pos, pairs.bg_pos) / 2 + _masked_mean(pos, pairs.fg_pos) / 2
    return (positive + _masked_mean(neg, pairs.neg)) / 2
