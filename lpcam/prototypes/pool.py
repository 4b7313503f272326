"""Bounded per-class samples of local features, the input of the k-means.

The official code holds every feature map of the training set in memory (≈9 GB on VOC, far more on
COCO). Here each class keeps a uniform sample of at most ``cap`` foreground and ``cap`` background
features (reservoir sampling, seeded), so memory is O(classes × cap × D) whatever the dataset size,
and every feature seen has the same chance to be kept.

Each sampled feature carries a *tag* saying what the ground truth has under it, for diagnostics
only (never for building prototypes): whether a prototype is a head, a body, or background halo.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# what lies under a feature, from the ground truth (diagnostics only)
IGNORED, OFF_OBJECT, DISCRIMINATIVE, SHARED, ON_OBJECT = -1, 0, 1, 2, 3
TAG_NAMES = {OFF_OBJECT: "off_object", DISCRIMINATIVE: "discriminative", SHARED: "shared", ON_OBJECT: "on_object"}


def feature_tags(mask: Tensor, parts: Tensor, c: int, ignore_index: int = 255) -> Tensor:
    """(h, w) tags for class index ``c`` from a mask and part map already on the feature grid:
    off the class's objects, on its discriminative / shared part, on it (no part map), or ignored."""
    tags = torch.full_like(mask, OFF_OBJECT)
    on = mask == c + 1
    tags[on] = torch.where(parts[on] > 0, parts[on], torch.full_like(parts[on], ON_OBJECT))
    tags[mask == ignore_index] = IGNORED
    return tags


class Reservoir:
    """A uniform random sample of at most ``cap`` rows out of all rows ever added (Algorithm R),
    with one integer tag per row."""

    def __init__(self, cap: int, dim: int, generator: torch.Generator) -> None:
        self.cap, self.seen = cap, 0
        self.buffer = torch.empty(0, dim)
        self.tags = torch.empty(0, dtype=torch.long)
        self.generator = generator

    def add(self, rows: Tensor, tags: Tensor | None = None) -> None:
        rows = rows.detach().float().cpu()
        tags = torch.full((len(rows),), IGNORED, dtype=torch.long) if tags is None else tags.long().cpu()
        free = max(0, self.cap - len(self.buffer))
        if free:
            self.buffer = torch.cat([self.buffer, rows[:free]])
            self.tags = torch.cat([self.tags, tags[:free]])
            self.seen += len(rows[:free])
            rows, tags = rows[free:], tags[free:]
        if not len(rows):
            return
        # row i (0-based) of the rest is item number seen+i: it replaces slot j ~ U{0..seen+i} if j < cap
        upper = self.seen + torch.arange(1, len(rows) + 1, dtype=torch.float64)
        slots = (torch.rand(len(rows), generator=self.generator, dtype=torch.float64) * upper).long()
        keep = slots < self.cap
        slots, rows, tags = slots[keep], rows[keep], tags[keep]
        if len(slots):
            # when two rows draw the same slot, the later one wins, as in the sequential algorithm
            last = {int(s): i for i, s in enumerate(slots)}
            idx = torch.tensor(list(last.values()))
            self.buffer[slots[idx]] = rows[idx]
            self.tags[slots[idx]] = tags[idx]
        self.seen += int(upper.numel())

    @property
    def rows(self) -> Tensor:
        return self.buffer


class FeaturePool:
    """Per class, a foreground and a background reservoir, plus counts for the halo diagnostic."""

    def __init__(self, num_classes: int, dim: int, cap: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.fg = [Reservoir(cap, dim, g) for _ in range(num_classes)]
        self.bg = [Reservoir(cap, dim, g) for _ in range(num_classes)]
        self.halo = torch.zeros(num_classes, dtype=torch.long)  # fg positions off the class's objects
        self.fg_known = torch.zeros(num_classes, dtype=torch.long)  # fg positions with known ground truth

    def add(self, c: int, features: Tensor, is_fg: Tensor, tags: Tensor | None = None) -> None:
        """``features`` (D, h, w) of an image labelled ``c``; ``is_fg`` (h, w) its CAM > τ split;
        ``tags`` (h, w) what the ground truth has under each position (see ``feature_tags``)."""
        flat = features.flatten(1).T
        fg = is_fg.flatten()
        flat_tags = tags.flatten() if tags is not None else None
        self.fg[c].add(flat[fg], None if flat_tags is None else flat_tags[fg])
        self.bg[c].add(flat[~fg], None if flat_tags is None else flat_tags[~fg])
        if flat_tags is not None:
            fg_tags = flat_tags[fg]
            self.halo[c] += int((fg_tags == OFF_OBJECT).sum())
            self.fg_known[c] += int((fg_tags != IGNORED).sum())

    def state_dict(self) -> dict:
        """What a later job needs to cluster this pool again (the feature cache stores it)."""
        return {
            "fg": [(r.buffer, r.tags, r.seen) for r in self.fg],
            "bg": [(r.buffer, r.tags, r.seen) for r in self.bg],
            "cap": self.fg[0].cap,
            "halo": self.halo,
            "fg_known": self.fg_known,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "FeaturePool":
        """A pool to cluster, not to add to: its sampling generator is not restored."""
        dim = state["fg"][0][0].shape[1]
        pool = cls(len(state["fg"]), dim, cap=state["cap"])
        for reservoirs, saved in ((pool.fg, state["fg"]), (pool.bg, state["bg"])):
            for r, (buffer, tags, seen) in zip(reservoirs, saved):
                r.buffer, r.tags, r.seen = buffer, tags, seen
        pool.halo, pool.fg_known = state["halo"], state["fg_known"]
        return pool

    def halo_share(self, c: int) -> float | None:
        """Share of the class's CAM > τ positions that are not on an object of the class."""
        n = int(self.fg_known[c])
        return float(self.halo[c]) / n if n else None


def merge_pools(states: list[dict], seed: int = 0) -> FeaturePool:
    """One pool from the pools of disjoint shards (their ``state_dict``s, in shard order), still a
    uniform sample of every feature seen.

    Where no reservoir dropped a feature (each holds all it saw, and together they fit the cap),
    the samples are concatenated in shard order: contiguous shards then give exactly the pool of
    one process. Otherwise each merged reservoir draws how many of its ``cap`` rows come from each
    shard from the multivariate hypergeometric law over the shards' seen counts (the split a
    uniform sample of the union would have), then that many rows uniformly from the shard's
    sample, itself uniform over the shard. ``seed`` makes every process merge alike.
    """
    cap = states[0]["cap"]
    dim = states[0]["fg"][0][0].shape[1]
    pool = FeaturePool(len(states[0]["fg"]), dim, cap)
    rng = np.random.default_rng(seed)
    for side in ("fg", "bg"):
        for c, reservoir in enumerate(getattr(pool, side)):
            parts = [state[side][c] for state in states]  # (buffer, tags, seen) per shard
            seen = np.array([s for _, _, s in parts], dtype=np.int64)
            if all(len(b) == s for b, _, s in parts) and seen.sum() <= cap:
                take = [torch.arange(len(b)) for b, _, _ in parts]
            else:
                counts = rng.multivariate_hypergeometric(seen, min(cap, int(seen.sum())))
                take = [torch.from_numpy(np.sort(rng.choice(len(b), size=k, replace=False))) for (b, _, _), k in zip(parts, counts)]
            reservoir.buffer = torch.cat([b[i] for (b, _, _), i in zip(parts, take)])
            reservoir.tags = torch.cat([t[i] for (_, t, _), i in zip(parts, take)])
            reservoir.seen = int(seen.sum())
    pool.halo = sum(state["halo"] for state in states)
    pool.fg_known = sum(state["fg_known"] for state in states)
    return pool
