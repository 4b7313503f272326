"""Seeded, capped, memory-bounded k-means for clustering local features into prototypes.

LPCAM clusters the local features of one class (one feature vector per feature-map
position; N up to ~1e5 rows of D = 64..2048 channels) into K prototypes. The official
implementation runs a cosine k-means with random initialisation, no iteration cap, and
broadcasts an N x K x D tensor to compute distances (several GB for ~5e4 features).

This module keeps the official semantics that matter for the results -- assignment by
cosine similarity, centres stored as plain means of the *raw* features -- while making
the procedure:

* reproducible: k-means++ initialisation driven by a ``torch.Generator`` seeded from
  ``seed``, and deterministic tie-breaking everywhere;
* bounded in time: at most ``max_iter`` Lloyd iterations, with a relative-shift
  convergence test (by default; ``init="random"``, ``stop="total"``, ``max_iter=None``
  give the official code's semantics, seeded);
* bounded in memory: rows are processed in chunks of ``chunk_size`` (by default as many
  rows as make 2**22 values, 16 MB of float32), so the extra memory is O(chunk_size * K)
  for distances (plus one chunk of rows in float64 for the sums, and one in float32 for
  other input dtypes, each a buffer reused chunk after chunk) and
  O(K * D) for centres and their running sums; N x K x D is never formed and the input is
  never copied as a whole (float16/float64 inputs are converted to float32 chunk by chunk);
* cheap per iteration: the float64 cluster sums are computed in full once, then updated by
  the points that changed cluster only (after the first few iterations, a few percent), so
  an iteration costs little more than its float32 distance product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["KMeansResult", "default_chunk_rows", "kmeans"]

Metric = Literal["cosine", "euclidean"]
Init = Literal["kmeans++", "greedy", "random"]
Stop = Literal["relative", "total"]

# Guards divisions by norms (zero feature vectors, zero centres).
_EPS = 1e-12


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of :func:`kmeans`.

    ``centres`` are exactly the means of the raw features whose ``labels`` point to them
    (labels come from the last assignment step, centres from the update that followed),
    so centres, labels and counts are mutually consistent and every cluster is
    non-empty. ``inertia`` is measured from each point to the centre of its own label.
    """

    centres: Tensor  # (k, D) float32: plain means of the raw features of each cluster
    labels: Tensor  # (N,) long
    counts: Tensor  # (k,) long, points per cluster
    iterations: int  # number of Lloyd (assign + update) steps performed
    converged: bool  # True when the relative centre shift fell below ``tol``
    inertia: float  # sum over points of the metric distance to their centre


def kmeans(
    x: Tensor,
    k: int,
    *,
    metric: Metric = "cosine",
    max_iter: int | None = 100,
    tol: float = 1e-4,
    seed: int = 0,
    chunk_size: int | None = None,
    init: Init = "kmeans++",
    stop: Stop = "relative",
    init_sample: int | None = None,
    start: Tensor | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` (N, D) into ``k`` centres.

    Args:
        x: (N, D) features, any real dtype; computation is done in float32 on ``x``'s
            device. Not modified and not copied as a whole.
        k: number of clusters. If N < k, k is reduced to N (each point becomes its own
            cluster) instead of failing: a class with very few feature positions should
            still yield prototypes.
        metric: ``"cosine"`` assigns each point to the centre of highest cosine
            similarity (distance ``1 - cos``), as in the official LPCAM code;
            ``"euclidean"`` uses squared L2 distance. Either way the update stores the
            plain mean of the raw (un-normalised) features, again as the official code
            does, so feature magnitude still shapes the prototypes.
        max_iter: cap on Lloyd iterations; None: no cap, as the official code (which
            then never stops if the centres keep moving).
        tol: the stopping threshold of ``stop``.
        seed: seeds the initialisation. With an explicit generator either ``init`` is
            bit-reproducible (the official code's is unseeded).
        chunk_size: rows processed at once; bounds extra memory to O(chunk_size * k). None:
            :func:`default_chunk_rows` (8192 rows at 512 channels, 32,768 at 128, 2048 at 2048).
        init: ``"kmeans++"`` (D^2 seeding: fewer iterations, better optima),
            ``"greedy"`` (greedy k-means++, scikit-learn's seeding: each centre the best of
            ``2 + ln k`` D^2 draws, by the potential it leaves; fewer iterations still, and one
            pass over the rows per centre as k-means++), or ``"random"``, k distinct rows drawn
            uniformly, as the official code (kmeans_pytorch) does.
        stop: ``"relative"`` stops when ``max_j ||c_new_j - c_old_j|| / (||c_old_j|| + eps)
            < tol``, whatever the features' scale; ``"total"`` when
            ``(sum_j ||c_new_j - c_old_j||)^2 < tol``, kmeans_pytorch's rule (the official
            code passes tol=5), an absolute threshold that depends on the features' scale.
        init_sample: seed ``"kmeans++"`` or ``"greedy"`` on a uniform sample of this many rows
            (drawn with ``seed``) instead of all of them; the Lloyd iterations still see every
            row. The seeding is one pass over its rows per centre, a quarter of the run at
            50,000 rows; on a sample it costs next to nothing, as in faiss (which trains on 256
            rows per centre) and scikit-learn's MiniBatchKMeans. None (the default): every row.
        start: with ``init="random"``, the indices of the k rows to start from instead of
            drawing them with ``seed`` (the official code's rows, drawn by numpy: see
            :func:`lpcam.prototypes.clustering.numpy_starts`).

    Returns:
        A :class:`KMeansResult`.

    Raises:
        ValueError: empty input, non-finite values, wrong shape or bad arguments.
    """
    _validate(x, k, metric, max_iter, tol, chunk_size, init, stop, init_sample)
    if start is not None and init != "random":
        raise ValueError(f"start (the initial rows) goes with init='random', not {init!r}")
    if chunk_size is None:
        chunk_size = default_chunk_rows(x.shape[1])
    with torch.no_grad():
        x = _Rows(x.detach(), chunk_size)
        if not bool(torch.isfinite(x.norms).all()):
            raise ValueError("kmeans input contains NaN or infinite values")
        n = x.shape[0]
        k = min(k, n)
        gen = torch.Generator(device="cpu").manual_seed(seed)

        if init == "random":
            rows = torch.randperm(n, generator=gen)[:k] if start is None else torch.as_tensor(start, dtype=torch.long)
            if start is not None and (len(rows) != k or len(set(rows.tolist())) != k or rows.min() < 0 or rows.max() >= n):
                raise ValueError(f"start must be {k} distinct row indices in [0, {n}), got {rows.tolist()}")
            centres = x.x[rows.to(x.device)].to(torch.float32)
        else:
            trials = 2 + int(math.log(k)) if init == "greedy" else 1
            seeds = x
            if init_sample is not None and init_sample < n:
                pick = torch.randperm(n, generator=gen)[:init_sample].sort().values.to(x.device)
                seeds = _Rows(x.x[pick], chunk_size, x.norms[pick])
            centres = _kmeans_plus_plus(seeds, k, metric, gen, trials)
        converged = False
        iterations = 0
        labels: Tensor | None = None
        sums = torch.empty(0)
        counts = torch.empty(0)
        while max_iter is None or iterations < max_iter:
            iterations += 1
            labels, dist, sums, counts = _assign(x, centres, metric, labels, sums)
            if bool((counts == 0).any()):
                _reseed_empty(x, labels, dist, sums, counts)
            new = (sums / counts.unsqueeze(1).to(sums.dtype)).to(torch.float32)
            moved = (new - centres).norm(dim=1)
            if stop == "total":
                done = float(moved.sum()) ** 2 < tol
            else:
                done = float((moved / (centres.norm(dim=1) + _EPS)).max()) < tol
            centres = new
            if done:
                converged = True
                break

        assert labels is not None  # at least one iteration ran (max_iter >= 1)
        inertia = _inertia(x, centres, labels, metric)
    return KMeansResult(
        centres=centres,
        labels=labels,
        counts=counts,
        iterations=iterations,
        converged=converged,
        inertia=inertia,
    )


def default_chunk_rows(channels: int) -> int:
    """Rows per chunk that hold 2**22 values (16 MB of float32) whatever the feature size.

    A fixed 8192 rows made the chunk 4 MB at 128 channels, so a pool of 20,000 rows took three
    chunks and three times the per-chunk calls in every pass, and 64 MB at 2048 channels (128 MB
    more for its float64 copy). Measured on the 2-core AMD EPYC with AVX512-BF16: the default
    job's 12 k-means 0.83 -> 0.74 s, and 30,000 x 2048 rows 0.82 -> 0.79 s with a quarter of the
    buffers. Each row's distances and the order in which rows enter the float64 sums do not depend
    on where the chunks end, and the results were the same bit for bit there (the job's 12 pools,
    and 60 fits at 64-2048 channels, K = 1-20, both metrics)."""
    return max(1, (1 << 22) // max(1, channels))


# --------------------------------------------------------------------------- helpers


def _validate(
    x: Tensor, k: int, metric: str, max_iter: int | None, tol: float, chunk_size: int | None, init: str, stop: str,
    init_sample: int | None,
) -> None:
    """Reject inputs that would otherwise fail obscurely (or silently give NaN centres)."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"kmeans expects a 2-D (N, D) tensor, got {getattr(x, 'shape', type(x))}")
    if x.is_complex():
        raise ValueError("kmeans expects real-valued features, got a complex tensor")
    if x.shape[0] == 0:
        raise ValueError("kmeans got an empty input (N == 0): there are no features to cluster")
    if x.shape[1] == 0:
        raise ValueError("kmeans got zero-dimensional features (D == 0)")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1):
        raise ValueError(f"max_iter must be a positive int or None (no cap), got {max_iter!r}")
    if init not in ("kmeans++", "greedy", "random"):
        raise ValueError(f"init must be 'kmeans++', 'greedy' or 'random', got {init!r}")
    if stop not in ("relative", "total"):
        raise ValueError(f"stop must be 'relative' or 'total', got {stop!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None (by the feature size), got {chunk_size!r}")
    if init_sample is not None and (isinstance(init_sample, bool) or not isinstance(init_sample, int) or init_sample < k):
        raise ValueError(f"init_sample must be a whole number of rows >= k ({k}) or None (every row), got {init_sample!r}")


class _Rows:
    """The input with its row norms, computed once, walked in chunks of float32 rows: every pass
    (seeding, assignment, inertia) reuses the norms instead of recomputing them from the rows
    (NaN or inf where a row is not finite; ``norms`` may be given, e.g. for a sample of rows).

    Conversions (float16/float64 inputs to float32 chunks, rows to float64 for the cluster sums)
    go into buffers allocated once and reused: a fresh chunk-sized tensor per chunk is a fresh
    mapping of tens of MB, and faulting its pages in cost several times the conversion itself
    (6.5 ms against 1 ms for 8192 x 512 rows to float64). A chunk from :meth:`chunks` and a
    view from :meth:`to_float64` are therefore valid only until the next call.
    """

    def __init__(self, x: Tensor, chunk_size: int, norms: Tensor | None = None) -> None:
        self.x, self.chunk_size = x, chunk_size
        self.shape, self.device = x.shape, x.device
        self._f32: Tensor | None = None
        self._f64: Tensor | None = None
        self.norms = self._row_norms() if norms is None else norms

    def __getitem__(self, i: int | Tensor) -> Tensor:
        return self.x[i]

    def chunks(self) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(start, float32 rows, their norms)."""
        for start, xc in self._float32_chunks():
            yield start, xc, self.norms[start : start + xc.shape[0]]

    def to_float64(self, rows: Tensor) -> Tensor:
        """``rows`` (at most a chunk of them) converted to float64 in the reused buffer."""
        if self._f64 is None:
            size = min(self.chunk_size, self.shape[0])
            self._f64 = torch.empty(size, self.shape[1], dtype=torch.float64, device=self.device)
        return self._f64[: rows.shape[0]].copy_(rows)

    def _float32_chunks(self) -> Iterator[tuple[int, Tensor]]:
        """(start, float32 rows): float32 input as views, other dtypes copied into the buffer."""
        for start in range(0, self.shape[0], self.chunk_size):
            xc = self.x[start : start + self.chunk_size]
            if xc.dtype != torch.float32:
                if self._f32 is None:
                    self._f32 = torch.empty(min(self.chunk_size, self.shape[0]), self.shape[1], device=self.device)
                xc = self._f32[: xc.shape[0]].copy_(xc)
            yield start, xc

    def _row_norms(self) -> Tensor:
        """(N,) float32 L2 norm of every row."""
        out = torch.empty(self.shape[0], dtype=torch.float32, device=self.device)
        for start, xc in self._float32_chunks():
            out[start : start + xc.shape[0]] = torch.linalg.vector_norm(xc, dim=1)
        return out


def _prepare(centres: Tensor, metric: Metric) -> tuple[Tensor, Tensor | None, int]:
    """Per-centre quantities reused by every chunk: unit centres (or centres) padded with zero rows
    for the product (see :func:`_padded_rows`), and ||c||^2 for the Euclidean metric."""
    k = centres.shape[0]
    c = F.normalize(centres, dim=1, eps=_EPS) if metric == "cosine" else centres
    padded = c.new_zeros(_padded_rows(k), c.shape[1])
    padded[:k] = c
    return padded, None if metric == "cosine" else (c * c).sum(dim=1), k


def _padded_rows(k: int) -> int:
    """How many rows the centre matrix of the distance product gets (the first ``k`` are the centres,
    the rest zeros whose columns are dropped).

    The product's speed depends on its number of columns far more than its work does: measured on a
    2-core AMD EPYC (MKL, 8192 rows a chunk; ``experiments/bench.py --only kmeans``), one column runs
    as a matrix-vector product on one thread, 2-3x slower at 512-2048 channels than two columns, and
    5 to 15 columns are 1.3-1.8x slower than 16, the float32 width of an AVX-512 kernel. The padded
    product can round differently from the unpadded one. Measured there, the default job's 12 pools
    gave the same centres bit for bit, and so did 127 of 128 other fits. The exception's inertia
    moved by 3e-9."""
    if k == 1:
        return 2
    if 5 <= k < 16:
        return 16
    return k


def _chunk_dist(xc: Tensor, norms: Tensor, prepared: tuple[Tensor, Tensor | None, int], metric: Metric) -> Tensor:
    """(chunk, k) distances from rows ``xc`` with L2 ``norms``; memory O(chunk * k) beyond the chunk."""
    c, c_sq, k = prepared
    dots = (xc @ c.T)[:, :k]
    if metric == "cosine":
        # Divide by the row norms instead of normalising the chunk (no chunk x D copy).
        return (1.0 - dots / norms.clamp_min(_EPS).unsqueeze(1)).clamp_min_(0.0)
    return (norms.square().unsqueeze(1) - 2.0 * dots + c_sq.unsqueeze(0)).clamp_min_(0.0)


def _assign(
    x: _Rows, centres: Tensor, metric: Metric, previous: Tensor | None = None, sums: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One pass: nearest centre per point, its distance, and per-cluster sums and counts.

    Without ``previous`` labels, every row is added to its cluster's float64 sum (exact to float64
    rounding). With them, ``sums`` (the float64 sums of those labels, updated in place) change only
    by the rows whose label changed: each moves out of its old cluster's sum and into its new one's,
    so an iteration that moves few points converts few rows to float64. The two agree to float64
    rounding, far below the float32 centres' last bit (the default job's prototypes are
    bit-identical either way).
    Ties go to the lowest centre index.
    """
    n, d = x.shape
    k = centres.shape[0]
    prepared = _prepare(centres, metric)
    labels = torch.empty(n, dtype=torch.long, device=x.device)
    dist = torch.empty(n, dtype=torch.float32, device=x.device)
    incremental = previous is not None and sums is not None
    if not incremental:
        sums = torch.zeros(k, d, dtype=torch.float64, device=x.device)
    assert sums is not None
    for start, xc, norms in x.chunks():
        dmin, lab = _chunk_dist(xc, norms, prepared, metric).min(dim=1)
        stop = start + xc.shape[0]
        labels[start:stop] = lab
        dist[start:stop] = dmin
        if incremental:
            old = previous[start:stop]
            moved = torch.nonzero(lab != old).flatten()
            if len(moved):
                rows = x.to_float64(xc[moved])
                sums.index_add_(0, lab[moved], rows)
                sums.index_add_(0, old[moved], rows, alpha=-1)
        else:
            sums.index_add_(0, lab, x.to_float64(xc))
    counts = torch.bincount(labels, minlength=k)
    return labels, dist, sums, counts


def _reseed_empty(x: _Rows, labels: Tensor, dist: Tensor, sums: Tensor, counts: Tensor) -> None:
    """Give each empty cluster the point currently farthest from its centre (in place).

    The point is moved out of its old cluster (sums/counts updated), so the new centre
    is that point and the old cluster's mean stays exact. Only points from clusters with
    more than one member qualify, so no cluster is emptied in turn; because N >= k such a
    cluster always exists. Empty clusters are handled in index order and argmax returns
    the first maximum, so the choice is deterministic.
    """
    for j in torch.nonzero(counts == 0).flatten().tolist():
        candidates = torch.where(counts[labels] > 1, dist, torch.full_like(dist, -1.0))
        i = int(candidates.argmax())
        old = int(labels[i])
        point = x[i].to(torch.float64)
        sums[old] -= point
        counts[old] -= 1
        sums[j] = point
        counts[j] = 1
        labels[i] = j
        dist[i] = 0.0  # now sits on its own centre; never picked twice


def _kmeans_plus_plus(x: _Rows, k: int, metric: Metric, gen: torch.Generator, trials: int = 1) -> Tensor:
    """k-means++ seeding under ``metric``, driven only by the CPU generator ``gen``.

    Each new centre is a data point drawn with probability proportional to its distance
    to the nearest chosen centre. For cosine, ``1 - cos`` equals half the squared chord
    between unit vectors, so this is the usual D^2 weighting on the sphere. With ``trials``
    > 1 (greedy k-means++, as scikit-learn), that many points are drawn and the one leaving
    the smallest total distance (the potential) is kept; the distances to all trials come
    from one pass over the rows. Only (N, trials) distances are kept. If every remaining
    weight is zero (fewer distinct points than k), a point is drawn uniformly; the resulting
    duplicate centre is then fixed by empty-cluster re-seeding.
    """
    n, d = x.shape
    centres = torch.empty(k, d, dtype=torch.float32, device=x.device)
    idx = int(torch.randint(n, (1,), generator=gen))
    centres[0] = x[idx].to(torch.float32)
    mind = _dist_to_many(x, centres[0:1], metric)[:, 0]
    for c in range(1, k):
        w = mind.to(device="cpu", dtype=torch.float64)
        u = torch.rand(trials, generator=gen, dtype=torch.float64)
        cum = torch.cumsum(w, dim=0)
        total = float(cum[-1])
        if total > 0.0:
            picks = torch.searchsorted(cum, u * total, right=True)
            # Guard u * total rounding to the end: take the last point with positive weight.
            picks = picks.clamp_max(int(torch.nonzero(w > 0).max()))
        else:
            picks = (u * n).long().clamp_max(n - 1)
        candidates = x[picks.to(x.device)].to(torch.float32)
        left = torch.minimum(mind.unsqueeze(1), _dist_to_many(x, candidates, metric))  # (N, trials)
        best = int(left.to(torch.float64).sum(dim=0).argmin()) if trials > 1 else 0  # the first of equal potentials
        centres[c] = candidates[best]
        mind = left[:, best].contiguous()
    return centres


def _dist_to_many(x: _Rows, centres: Tensor, metric: Metric) -> Tensor:
    """(N, m) distances from every point to each of ``m`` centres, in one pass over the rows."""
    prepared = _prepare(centres, metric)
    out = torch.empty(x.shape[0], centres.shape[0], dtype=torch.float32, device=x.device)
    for start, xc, norms in x.chunks():
        out[start : start + xc.shape[0]] = _chunk_dist(xc, norms, prepared, metric)
    return out


def _inertia(x: _Rows, centres: Tensor, labels: Tensor, metric: Metric) -> float:
    """Sum of metric distances from each point to the centre of its label (float64 sum)."""
    prepared = _prepare(centres, metric)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start, xc, norms in x.chunks():
        lab = labels[start : start + xc.shape[0]]
        dist = _chunk_dist(xc, norms, prepared, metric).gather(1, lab.unsqueeze(1))
        total += dist.to(torch.float64).sum()
    return float(total)
