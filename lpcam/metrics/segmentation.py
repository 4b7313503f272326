"""Seed evaluation of class activation maps (the IRN / LPCAM protocol).

Per image, the CAMs of the labelled classes are turned into a seed mask by
putting a constant background map equal to a threshold ``t`` in front of them
and taking the argmax. A pixel is foreground only if its highest CAM is
*strictly* greater than ``t``; ties go to background. The quality of the seeds
is reported for a whole grid of thresholds at once, since the best one differs
between methods and comparing at a single arbitrary threshold is unfair.

All thresholds are evaluated in one pass: the max / argmax over the CAMs is
computed once, compared against every threshold, and all ``T`` confusion
matrices are filled with a single ``torch.bincount``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["DEFAULT_THRESHOLDS", "PART_NAMES", "seeds_from_cams", "scores", "SeedConfusion"]

# 0.05, 0.10, ..., 0.95 and 0.99: the grid commonly swept for CAM seeds.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (0.99,)

# Names of the part labels 1, 2, ... of synthetic datasets (0 = no part).
PART_NAMES: tuple[str, ...] = ("discriminative", "shared")


def _seeds(cams: Tensor, keys: Tensor, thresholds: Tensor) -> Tensor:
    """Seeds for every threshold: cams (n, *S), keys (n,), thresholds (T,) -> (T, *S) long.

    Shared by ``seeds_from_cams`` and ``SeedConfusion.update`` so that the
    exported seeds and the evaluated seeds can never disagree.
    """
    spatial = cams.shape[1:]
    if cams.shape[0] == 0:  # no labelled class: everything is background
        return torch.zeros((len(thresholds), *spatial), dtype=torch.long, device=cams.device)
    max_val, arg = cams.max(dim=0)  # first maximal index on ties between CAMs
    thr = thresholds.to(device=cams.device, dtype=cams.dtype).view(-1, *([1] * len(spatial)))
    foreground = max_val.unsqueeze(0) > thr  # strict: ties go to background
    lut = torch.cat([keys.new_zeros(1), keys]).long()  # index 0 -> class 0, i -> keys[i-1]
    return lut[(arg + 1).unsqueeze(0) * foreground]


def _as_float(cams: Tensor) -> Tensor:
    return cams if cams.is_floating_point() else cams.float()


def seeds_from_cams(cams: Tensor, keys: Tensor, threshold: float) -> Tensor:
    """(H, W) long seed mask for one threshold (for figures and export)."""
    cams = _as_float(cams)
    return _seeds(cams, keys.to(cams.device), torch.tensor([float(threshold)]))[0]


def scores(confusion: Tensor) -> dict[str, Tensor | float]:
    """Per-class and mean scores of one (C, C) confusion matrix (rows = gt, cols = prediction).

    Per-class vectors are fractions in [0, 1]; the means (``miou``, ``mfp``,
    ``mfn``, ``mprecision``, ``mrecall``) are percentages. ``fp`` and ``fn`` are
    normalised by the union, so ``iou = 1 - fp - fn``.

    A class with an empty union (never in the ground truth, never predicted)
    says nothing about the method: it is ``nan`` in the per-class vectors and
    left out of the means. A class in the union whose precision (or recall)
    denominator is zero, e.g. present but never predicted, scores 0 there.
    """
    conf = confusion.double()
    tp = conf.diagonal()
    fp = conf.sum(dim=0) - tp
    fn = conf.sum(dim=1) - tp
    union = tp + fp + fn
    present = union > 0
    nan = torch.full_like(tp, math.nan)

    def ratio(num: Tensor, den: Tensor) -> Tensor:
        value = torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))
        return torch.where(present, value, nan)

    out: dict[str, Tensor | float] = {
        "iou": ratio(tp, union),
        "fp": ratio(fp, union),
        "fn": ratio(fn, union),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }
    for name in ("iou", "fp", "fn", "precision", "recall"):
        out["m" + name] = 100.0 * torch.nanmean(out[name]).item()
    return out


def _round(value: float) -> float | None:
    """JSON-friendly number: 4 decimals, ``None`` for undefined (nan)."""
    return None if math.isnan(value) else round(float(value), 4)


class SeedConfusion:
    """Accumulates one confusion matrix per background threshold (rows = ground truth,
    cols = prediction), plus part-recall counts.

    The state is plain int64 tensors (kept on CPU) so it can be summed across
    DDP ranks: ``state()`` -> all_reduce each tensor -> ``load_state()``.
    ``merge(other)`` adds another accumulator's counts to this one.
    """

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        ignore_index: int = 255,
        num_parts: int = 2,
    ) -> None:
        if len(thresholds) == 0:
            raise ValueError("thresholds must not be empty")
        self.num_classes = int(num_classes)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.ignore_index = int(ignore_index)
        self.num_parts = int(num_parts)
        T, C = len(self.thresholds), self.num_classes
        self.confusion = torch.zeros(T, C, C, dtype=torch.long)
        self.part_hits = torch.zeros(T, self.num_parts, dtype=torch.long)
        self.part_total = torch.zeros(self.num_parts, dtype=torch.long)

    def update(self, cams: Tensor, keys: Tensor, gt: Tensor, parts: Tensor | None = None) -> None:
        """Add one image: cams (n, H, W) in [0, 1], keys (n,) class ids, gt (H, W), parts (H, W)."""
        C, T = self.num_classes, len(self.thresholds)
        if cams.dim() != 3 or cams.shape[1:] != gt.shape or keys.numel() != cams.shape[0]:
            raise ValueError(
                f"shape mismatch: cams {tuple(cams.shape)}, keys {tuple(keys.shape)}, gt {tuple(gt.shape)}"
            )
        cams = _as_float(cams)
        keys = keys.to(cams.device).long().view(-1)
        if keys.numel() and (keys.min() < 1 or keys.max() >= C):
            raise ValueError(f"keys must be class ids in 1..{C - 1}, got {keys.tolist()}")
        gt = gt.to(cams.device).long()
        valid = gt != self.ignore_index
        gt_v = gt[valid]  # (N,)
        if gt_v.numel() and (gt_v.min() < 0 or gt_v.max() >= C):
            raise ValueError(f"gt has labels outside 0..{C - 1} (ignore_index={self.ignore_index})")

        thresholds = torch.tensor(self.thresholds)
        seeds = _seeds(cams[:, valid], keys, thresholds)  # (T, N), only non-ignored pixels
        offset = torch.arange(T, device=cams.device).view(-1, 1) * (C * C)
        flat = offset + gt_v.unsqueeze(0) * C + seeds
        counts = torch.bincount(flat.reshape(-1), minlength=T * C * C)
        self.confusion += counts.view(T, C, C).cpu()

        if parts is not None:
            if parts.shape != gt.shape:
                raise ValueError(f"parts shape {tuple(parts.shape)} != gt shape {tuple(gt.shape)}")
            parts_v = parts.to(cams.device).long()[valid]
            correct = seeds == gt_v.unsqueeze(0)  # (T, N)
            for p in range(self.num_parts):
                in_part = parts_v == p + 1
                self.part_total[p] += int(in_part.sum())
                self.part_hits[:, p] += (correct & in_part.unsqueeze(0)).sum(dim=1).cpu()

    def merge(self, other: "SeedConfusion") -> None:
        """Add the counts of another accumulator with the same configuration."""
        if (other.num_classes, other.thresholds, other.num_parts) != (
            self.num_classes,
            self.thresholds,
            self.num_parts,
        ):
            raise ValueError("cannot merge SeedConfusion objects with different configurations")
        self._add(other.state())

    def state(self) -> dict[str, Tensor]:
        """The counts as a dict of tensors (e.g. to all_reduce across ranks)."""
        return {"confusion": self.confusion, "part_hits": self.part_hits, "part_total": self.part_total}

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Replace the counts by ``state`` (e.g. after all_reduce of ``state()``)."""
        for name, value in state.items():
            self._check(name, value)
            setattr(self, name, value.detach().to("cpu", torch.long).clone())

    def _add(self, state: dict[str, Tensor]) -> None:
        for name, value in state.items():
            self._check(name, value)
            getattr(self, name).add_(value.to("cpu", torch.long))

    def _check(self, name: str, value: Tensor) -> None:
        current = getattr(self, name, None)
        if name not in ("confusion", "part_hits", "part_total") or current.shape != value.shape:
            raise ValueError(f"unexpected state entry {name!r} with shape {tuple(value.shape)}")

    def results(self, class_names: Sequence[str], default_threshold: float) -> dict:
        """JSON-ready summary: best and default threshold, per-class IoU and part
        recall at the best threshold, and the whole threshold curve (percentages)."""
        if len(class_names) != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class names, got {len(class_names)}")
        matches = [i for i, t in enumerate(self.thresholds) if math.isclose(t, default_threshold, abs_tol=1e-9)]
        if not matches:
            raise ValueError(
                f"default_threshold {default_threshold} is not on the threshold grid {list(self.thresholds)}"
            )

        per_threshold = [scores(conf) for conf in self.confusion]
        curve = [
            {
                "threshold": t,
                "miou": _round(s["miou"]),
                "fp": _round(s["mfp"]),
                "fn": _round(s["mfn"]),
                "precision": _round(s["mprecision"]),
                "recall": _round(s["mrecall"]),
            }
            for t, s in zip(self.thresholds, per_threshold)
        ]
        # Highest mIoU; the lowest threshold wins ties; nan (nothing counted) never wins.
        best = max(range(len(curve)), key=lambda i: -math.inf if curve[i]["miou"] is None else curve[i]["miou"])

        out = {
            "best": dict(curve[best]),
            "default": dict(curve[matches[0]]),
            "per_class_iou": {
                name: _round(100.0 * float(v)) for name, v in zip(class_names, per_threshold[best]["iou"])
            },
        }
        if int(self.part_total.sum()) > 0:
            # Also on every curve point: methods whose best thresholds differ are compared part by
            # part at one threshold (a higher threshold trades part pixels for fewer false positives).
            for t, point in enumerate(curve):
                point["part_recall"] = self._part_recall(t)
            out["part_recall"] = self._part_recall(best)
        out["curve"] = curve
        return out

    def _part_recall(self, t: int) -> dict[str, float | None]:
        """Percentage of each part's pixels predicted as their object's class at threshold ``t``."""
        names = PART_NAMES + tuple(f"part{p + 1}" for p in range(len(PART_NAMES), self.num_parts))
        return {
            names[p]: _round(100.0 * int(self.part_hits[t, p]) / int(self.part_total[p])) if int(self.part_total[p]) > 0 else None
            for p in range(self.num_parts)
        }
