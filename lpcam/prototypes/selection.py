"""Which k-means centres become class prototypes and which context prototypes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def centre_scores(centres: Tensor, weights: Tensor, score: str = "softmax") -> Tensor:
    """(k, C) classifier score of each centre for each class.

    ``softmax``: the official rule, softmax over classes of ``centre · W^T`` on the raw centre.
    ``sigmoid``: each class independently (the classifier was trained with per-class sigmoids), so a
    part shared by two classes can score high for both.
    """
    logits = centres @ weights.T
    if score == "softmax":
        return logits.softmax(1)
    if score == "sigmoid":
        return logits.sigmoid()
    raise ValueError(f"lpcam.score={score!r}: expected 'softmax' or 'sigmoid'")


@dataclass
class Selection:
    class_idx: Tensor  # indices into the foreground centres
    context_idx: Tensor  # indices into the background centres
    fg_scores: Tensor  # (k_fg,) score of class c for each foreground centre
    bg_scores: Tensor  # (k_bg,)


def select_prototypes(
    fg_centres: Tensor,
    bg_centres: Tensor,
    c: int,
    weights: Tensor,
    mu_fg: float = 0.9,
    mu_bg: float = 0.9,
    context_min: float = 0.05,
    score: str = "softmax",
    keep_best: bool = True,
) -> Selection:
    """The paper's rule for class ``c``: foreground centres with score_c > μ_f are class prototypes
    (the best one when none passes and ``keep_best``); background centres with
    ``context_min`` < score_c < μ_b are context prototypes (0.05 is the official code's bound)."""
    fg_s = centre_scores(fg_centres, weights, score)[:, c] if len(fg_centres) else fg_centres.new_zeros(0)
    bg_s = centre_scores(bg_centres, weights, score)[:, c] if len(bg_centres) else bg_centres.new_zeros(0)
    class_idx = torch.nonzero(fg_s > mu_fg).flatten()
    if not len(class_idx) and keep_best and len(fg_s):
        class_idx = fg_s.argmax().view(1)
    context_idx = torch.nonzero((bg_s > context_min) & (bg_s < mu_bg)).flatten()
    return Selection(class_idx, context_idx, fg_s, bg_s)



