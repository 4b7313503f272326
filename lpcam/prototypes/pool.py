"""Bounded per-class samples of local features, the input of the k-means.

The official code holds every feature map of the training set in memory (≈9 GB on VOC, far more on
COCO). Here each class keeps a uniform sample of at most ``cap`` foreground and ``cap`` background
features (reservoir sampling, seeded), so memory is O(classes × cap × D) whatever the dataset size,
and every feature seen has the same chance to be kept. :func:`pool_cap` turns a memory budget into
that cap.

A whole batch is sampled at once (:meth:`FeaturePool.add_batch`): the split, the draws and the tags
of every (image, labelled class) pair are tensor operations, with no Python loop per image or
class. The result is, bit for bit, what adding the pairs one by one in image-major order gives
(Algorithm R with one generator shared by all reservoirs), which is what the tests check against
a plain sequential implementation.

Each sampled feature carries a *tag* saying what the ground truth has under it, for diagnostics
only (never for building prototypes): whether a prototype is a head, a body, or background halo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

# what lies under a feature, from the ground truth (diagnostics only)
IGNORED, OFF_OBJECT, DISCRIMINATIVE, SHARED, ON_OBJECT = -1, 0, 1, 2, 3
TAG_NAMES = {OFF_OBJECT: "off_object", DISCRIMINATIVE: "discriminative", SHARED: "shared", ON_OBJECT: "on_object"}
FG, BG = 0, 1  # the two sides of a class: reservoir 2c + side
TAG_DTYPE = torch.int8  # one byte a sampled feature: tags are -1..3
POOL_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WRITE_ROWS = 8192  # kept features gathered and stored at a time (64 MB of 2048-d float32)
BLOCK_ROWS = 1024  # slots a reservoir gains at a time


def feature_tags(mask: Tensor, parts: Tensor, c: Tensor | int, ignore_index: int = 255) -> Tensor:
    """Tags for class index ``c`` from masks and part maps already on the feature grid: off the
    class's objects, on its discriminative / shared part, on it (no part map), or ignored.

    ``mask``/``parts`` are (h, w) with an int ``c``, or (P, h, w) with one class index per map."""
    c = torch.as_tensor(c, device=mask.device)
    if c.dim():
        c = c.view(-1, *([1] * (mask.dim() - 1)))
    on = mask == c + 1
    tags = torch.where(on, torch.where(parts > 0, parts, torch.full_like(parts, ON_OBJECT)), torch.full_like(mask, OFF_OBJECT))
    return tags.masked_fill(mask == ignore_index, IGNORED)


def row_bytes(dim: int, dtype: torch.dtype) -> int:
    """Bytes one sampled feature takes in a pool: its ``dim`` values and its tag."""
    return dim * torch.empty(0, dtype=dtype).element_size() + torch.empty(0, dtype=TAG_DTYPE).element_size()


def pool_cap(budget_mb: float | None, num_classes: int, dim: int, dtype: torch.dtype, limit: int | None) -> int:
    """Features kept per class and side so that all ``2 × num_classes`` reservoirs (rows and their
    one-byte tags) fit ``budget_mb``; at most ``limit`` when one is given (0 when the budget does
    not hold one feature a reservoir: the caller says which setting to raise)."""
    caps = [limit] if limit else []
    if budget_mb:
        caps.append(int(budget_mb * 2**20) // (2 * num_classes * row_bytes(dim, dtype)))
    if not caps:
        raise ValueError("a feature pool needs a cap: a memory budget or a number of features per class")
    return min(caps)


@dataclass
class Side:
    """One reservoir of a pool (a class's foreground or background), as read by the clustering."""

    pool: "FeaturePool"
    index: int  # 2c + side

    @property
    def rows(self) -> Tensor:
        return self.pool.reservoir_rows(self.index)

    @property
    def tags(self) -> Tensor:
        return self.pool.reservoir_tags(self.index).long()

    @property
    def seen(self) -> int:
        return int(self.pool.seen[self.index])

    @property
    def cap(self) -> int:
        return self.pool.cap

    def add(self, rows: Tensor, tags: Tensor | None = None) -> None:
        """Offer ``rows`` (n, D), in order, to this reservoir alone."""
        n = len(rows)
        tags = torch.full((n,), IGNORED) if tags is None else tags
        self.pool.sample(torch.full((n,), self.index, dtype=torch.long), lambda i: rows[i], tags)


class FeaturePool:
    """Per class, a foreground and a background reservoir (uniform samples of at most ``cap``
    features, stored in ``dtype``), plus counts for the halo diagnostic.

    The reservoirs' slots live in blocks of ``BLOCK_ROWS`` slots of every reservoir, (2C, block,
    D) tensors added as the fullest reservoir needs them: memory follows what was sampled, never
    beyond the cap, and growing copies nothing (so the peak stays the pool's size)."""

    def __init__(self, num_classes: int, dim: int, cap: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        self.num_classes, self.dim, self.cap, self.dtype = num_classes, dim, cap, dtype
        self.generator = torch.Generator().manual_seed(seed)
        self.block = min(cap, BLOCK_ROWS)
        self.row_blocks: list[Tensor] = []  # block b holds slots b·block … (b+1)·block − 1
        self.tag_blocks: list[Tensor] = []
        self.seen = torch.zeros(2 * num_classes, dtype=torch.long)
        self.halo = torch.zeros(num_classes, dtype=torch.long)  # fg positions off the class's objects
        self.fg_known = torch.zeros(num_classes, dtype=torch.long)  # fg positions with known ground truth

    @property
    def fg(self) -> list[Side]:
        return [Side(self, 2 * c + FG) for c in range(self.num_classes)]

    @property
    def bg(self) -> list[Side]:
        return [Side(self, 2 * c + BG) for c in range(self.num_classes)]

    def filled(self, index: int) -> int:
        return min(int(self.seen[index]), self.cap)

    @property
    def capacity(self) -> int:
        """Slots allocated a reservoir."""
        return sum(b.shape[1] for b in self.row_blocks)

    @property
    def nbytes(self) -> int:
        """Memory held by the samples (rows and tags, allocated capacity included)."""
        return sum(b.numel() * b.element_size() for b in (*self.row_blocks, *self.tag_blocks))

    def reservoir_rows(self, index: int) -> Tensor:
        """(filled, D) the sampled features of one reservoir."""
        return self._gather(self.row_blocks, index, torch.empty(0, self.dim, dtype=self.dtype))

    def reservoir_tags(self, index: int) -> Tensor:
        """(filled,) the tags of those features."""
        return self._gather(self.tag_blocks, index, torch.empty(0, dtype=TAG_DTYPE))

    def _gather(self, blocks: list[Tensor], index: int, empty: Tensor) -> Tensor:
        return torch.cat([b[index] for b in blocks])[: self.filled(index)] if blocks else empty

    def add(self, c: int, features: Tensor, is_fg: Tensor, tags: Tensor | None = None) -> None:
        """``features`` (D, h, w) of an image labelled ``c``; ``is_fg`` (h, w) its CAM > τ split;
        ``tags`` (h, w) what the ground truth has under each position (see :func:`feature_tags`)."""
        pairs = torch.tensor([[0, c]])
        self.add_batch(features[None], pairs, is_fg[None], None if tags is None else tags[None])

    def add_batch(
        self, features: Tensor, pairs: Tensor, is_fg: Tensor, tags: Tensor | None = None, is_bg: Tensor | None = None
    ) -> None:
        """Sample a batch: ``features`` (B, D, h, w); ``pairs`` (P, 2) the (image, class) pairs
        to add, image-major; ``is_fg`` (P, h, w) each pair's CAM > τ split; ``tags`` (P, h, w);
        ``is_bg`` (P, h, w) the background positions, by default every position not in ``is_fg``
        (a position in neither is left out: the official code's CAM = τ exactly).

        The entries are every (pair, side, position), in that order: the order in which adding
        each pair's foreground, then background, positions one pair after another draws from the
        generator. Only the features that are kept are gathered (and copied to the CPU)."""
        sides = torch.stack([is_fg, ~is_fg if is_bg is None else is_bg & ~is_fg], 1).flatten(2)  # (P, 2, hw)
        p, side, pos = sides.nonzero(as_tuple=True)
        image, cls = pairs[p, 0].to(features.device), pairs[p, 1].to(features.device)
        entry_tags = torch.full_like(p, IGNORED) if tags is None else tags.flatten(1)[p, pos]
        flat = features.flatten(2)  # (B, D, hw), a view
        self.sample(2 * cls + side, lambda i: flat[image[i], :, pos[i]], entry_tags)
        fg = side == FG
        if tags is not None:
            self.halo += torch.bincount(cls[fg & (entry_tags == OFF_OBJECT)], minlength=self.num_classes).cpu()
            self.fg_known += torch.bincount(cls[fg & (entry_tags != IGNORED)], minlength=self.num_classes).cpu()

    def sample(self, reservoir: Tensor, rows_of: Callable[[Tensor], Tensor], tags: Tensor) -> None:
        """Offer entries, in order, each to its ``reservoir`` (n,); ``rows_of(i)`` gives the
        features of entries ``i``. Algorithm R on whole tensors: entry number g (0-based) of its
        reservoir takes slot g while g < cap, else slot ⌊u·(g+1)⌋ if that is < cap, u uniform,
        drawn in entry order; when entries of one batch draw the same slot the later one wins."""
        n = len(reservoir)
        if not n:
            return
        reservoir = reservoir.cpu()
        counts = torch.bincount(reservoir, minlength=len(self.seen))
        order = torch.argsort(reservoir, stable=True)
        rank = torch.empty(n, dtype=torch.long)
        rank[order] = torch.arange(n) - (torch.cumsum(counts, 0) - counts)[reservoir[order]]
        number = self.seen[reservoir] + rank  # each entry's 0-based index among all its reservoir saw
        slot = number.clone()
        over = number >= self.cap
        draws = torch.rand(int(over.sum()), generator=self.generator, dtype=torch.float64)
        slot[over] = (draws * (number[over] + 1).to(torch.float64)).long()
        kept = torch.nonzero(slot < self.cap).flatten()
        key = reservoir[kept] * self.cap + slot[kept]
        unique, inverse = torch.unique(key, return_inverse=True)
        last = torch.full((len(unique),), -1, dtype=torch.long).scatter_reduce(0, inverse, torch.arange(len(key)), "amax")
        winners = kept[last]
        self._reserve(int(torch.minimum(self.seen + counts, torch.tensor(self.cap)).max()))
        for start in range(0, len(winners), WRITE_ROWS):  # bounded temporaries, whatever the batch
            part = winners[start : start + WRITE_ROWS]
            where = part.to(tags.device)
            rows = rows_of(where).to(device="cpu", dtype=self.dtype)
            part_tags = tags[where].to(device="cpu", dtype=TAG_DTYPE)
            block, offset = slot[part] // self.block, slot[part] % self.block
            for b in torch.unique(block).tolist():
                here = block == b
                self.row_blocks[b][reservoir[part][here], offset[here]] = rows[here]
                self.tag_blocks[b][reservoir[part][here], offset[here]] = part_tags[here]
        self.seen += counts

    def _reserve(self, needed: int) -> None:
        """Add blocks until a reservoir has ``needed`` slots (never beyond ``cap``)."""
        while (have := self.capacity) < min(needed, self.cap):
            size = min(self.block, self.cap - have)  # the last block ends at the cap
            self.row_blocks.append(torch.empty(len(self.seen), size, self.dim, dtype=self.dtype))
            self.tag_blocks.append(torch.full((len(self.seen), size), IGNORED, dtype=TAG_DTYPE))

    def state_dict(self) -> dict:
        """What a later job needs to cluster this pool again (the feature cache stores it)."""
        return {
            "fg": [(s.rows.clone(), s.tags, s.seen) for s in self.fg],
            "bg": [(s.rows.clone(), s.tags, s.seen) for s in self.bg],
            "cap": self.cap,
            "halo": self.halo,
            "fg_known": self.fg_known,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "FeaturePool":
        """A pool to cluster, not to add to: its sampling generator is not restored."""
        fg, bg = state["fg"], state["bg"]
        buffers = [b for pair in zip(fg, bg) for b in pair]  # reservoir 2c + side
        dim = buffers[0][0].shape[1]
        pool = cls(len(fg), dim, cap=state["cap"], dtype=buffers[0][0].dtype)
        pool._reserve(max(len(rows) for rows, _, _ in buffers))
        for index, (rows, tags, seen) in enumerate(buffers):
            for b, start in enumerate(range(0, len(rows), pool.block)):
                part = slice(start, start + pool.block)
                pool.row_blocks[b][index, : len(rows[part])] = rows[part]
                pool.tag_blocks[b][index, : len(rows[part])] = tags[part].to(TAG_DTYPE)
            pool.seen[index] = seen
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
    rng = np.random.default_rng(seed)
    merged: dict = {"cap": cap}
    for side in ("fg", "bg"):
        merged[side] = []
        for c in range(len(states[0][side])):
            parts = [state[side][c] for state in states]  # (rows, tags, seen) per shard
            seen = np.array([s for _, _, s in parts], dtype=np.int64)
            if all(len(b) == s for b, _, s in parts) and seen.sum() <= cap:
                take = [torch.arange(len(b)) for b, _, _ in parts]
            else:
                counts = rng.multivariate_hypergeometric(seen, min(cap, int(seen.sum())))
                take = [torch.from_numpy(np.sort(rng.choice(len(b), size=k, replace=False))) for (b, _, _), k in zip(parts, counts)]
            rows = torch.cat([b[i] for (b, _, _), i in zip(parts, take)])
            tags = torch.cat([t[i] for (_, t, _), i in zip(parts, take)])
            merged[side].append((rows, tags, int(seen.sum())))
    merged["halo"] = sum(state["halo"] for state in states)
    merged["fg_known"] = sum(state["fg_known"] for state in states)
    return FeaturePool.from_state_dict(merged)
