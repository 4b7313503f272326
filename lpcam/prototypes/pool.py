"""Bounded per-class samples of local features, the input of the k-means.

The official code holds every feature map of the training set in memory (≈9 GB on VOC, far more on
COCO). Here each class keeps a uniform sample of at most ``cap`` foreground and ``cap`` background
features (reservoir sampling, seeded), so memory is O(classes × cap × D) whatever the dataset size,
and every feature seen has the same chance to be kept.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Reservoir:
    """A uniform random sample of at most ``cap`` rows out of all rows ever added (Algorithm R)."""

    def __init__(self, cap: int, dim: int, generator: torch.Generator) -> None:
        self.cap, self.seen = cap, 0
        self.buffer = torch.empty(0, dim)
        self.generator = generator

    def add(self, rows: Tensor) -> None:
        rows = rows.detach().float().cpu()
        free = max(0, self.cap - len(self.buffer))
        if free:
            self.buffer = torch.cat([self.buffer, rows[:free]])
            self.seen += len(rows[:free])
            rows = rows[free:]
        if not len(rows):
            return
        # row i (0-based) of the rest is item number seen+i: it replaces slot j ~ U{0..seen+i} if j < cap
        upper = self.seen + torch.arange(1, len(rows) + 1, dtype=torch.float64)
        slots = (torch.rand(len(rows), generator=self.generator, dtype=torch.float64) * upper).long()
        keep = slots < self.cap
        slots, rows = slots[keep], rows[keep]
        if len(slots):
            # when two rows draw the same slot, the later one wins, as in the sequential algorithm
            last = {int(s): i for i, s in enumerate(slots)}
            idx = torch.tensor(list(last.values()))
            self.buffer[slots[idx]] = rows[idx]
        self.seen += int(upper.numel())

    @property
    def rows(self) -> Tensor:
        return self.buffer


class FeaturePool:
    """Per class, a foreground and a background reservoir, plus counts for diagnostics."""

    def __init__(self, num_classes: int, dim: int, cap: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.fg = [Reservoir(cap, dim, g) for _ in range(num_classes)]
        self.bg = [Reservoir(cap, dim, g) for _ in range(num_classes)]
        self.halo = torch.zeros(num_classes, dtype=torch.long)  # fg positions outside the class's mask
        self.fg_known = torch.zeros(num_classes, dtype=torch.long)  # fg positions with a known mask

    def add(
        self, c: int, features: Tensor, is_fg: Tensor, on_object: Tensor | None = None, known: Tensor | None = None
    ) -> None:
        """``features`` (D, h, w) of an image labelled ``c``; ``is_fg`` (h, w) its CAM > τ split;
        ``on_object`` (h, w) where ground truth says class c and ``known`` where it is not ignored
        (both optional: they only feed the halo diagnostic)."""
        flat = features.flatten(1).T
        fg = is_fg.flatten()
        self.fg[c].add(flat[fg])
        self.bg[c].add(flat[~fg])
        if on_object is not None:
            fg_known = fg & (known.flatten() if known is not None else True)
            self.halo[c] += int((fg_known & ~on_object.flatten()).sum())
            self.fg_known[c] += int(fg_known.sum())

    def halo_share(self, c: int) -> float | None:
        """Share of the class's CAM > τ positions that are not on an object of the class."""
        n = int(self.fg_known[c])
        return float(self.halo[c]) / n if n else None
