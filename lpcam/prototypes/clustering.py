"""From a feature pool to prototypes: k-means on each class's samples, then the selection rule.

Pure algorithm on tensors: it knows nothing of models, data loaders or caches (the stage in
:mod:`lpcam.stages.prototypes` feeds it), so it can be tested and reused on any features.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from lpcam.prototypes.kmeans import KMeansResult, kmeans
from lpcam.prototypes.pool import TAG_NAMES, FeaturePool
from lpcam.prototypes.selection import select_prototypes
from lpcam.prototypes.settings import PrototypeSettings
from lpcam.prototypes.store import Prototypes

log = logging.getLogger(__name__)


def cluster_and_select(
    pool: FeaturePool,
    weights: Tensor,
    class_names: list[str],
    settings: PrototypeSettings,
    progress: bool = True,
) -> Prototypes:
    """k-means on each class's foreground and background samples; keep the centres the rule picks.

    Returns the prototypes with their classifier scores and per-class diagnostics (``stats``); the
    caller adds the ``meta`` that says what built them.
    """
    s = settings
    weights = weights.detach().float().cpu()
    numpy_rows = np.random.RandomState(s.seed) if s.kmeans_rng == "numpy" else None  # one stream, class by class
    class_protos, context_protos, class_scores, context_scores, stats = [], [], [], [], {}
    for c, name in enumerate(tqdm(class_names, desc="prototypes: k-means", disable=not progress, leave=False)):
        fg_rows, bg_rows = pool.fg[c].rows, pool.bg[c].rows
        if not len(fg_rows):
            # a class never labelled, or whose CAM is zero everywhere: no prototype, LPCAM map zero
            log.warning(
                "prototypes: class %r has no feature with CAM > lpcam.tau in the training split (is it labelled "
                "in any training image? are its CAMs all zero?); its LPCAM map will be empty",
                name,
            )
            empty = weights.new_zeros(0, weights.shape[1])
            class_protos.append(empty)
            context_protos.append(empty)
            class_scores.append(weights.new_zeros(0))
            context_scores.append(weights.new_zeros(0))
            stats[name] = {"no_foreground": True, "fg_pool": 0, "bg_pool": pool.bg[c].seen, "halo_share": None}
            continue
        fg = cluster(fg_rows, s, numpy_rows)
        bg = cluster(bg_rows, s, numpy_rows) if len(bg_rows) else None
        bg_centres = bg.centres if bg is not None else weights.new_zeros(0, weights.shape[1])
        sel = select_prototypes(fg.centres, bg_centres, c, weights, s.mu_fg, s.mu_bg, s.context_min, s.score, s.keep_best)
        class_protos.append(fg.centres[sel.class_idx])
        context_protos.append(bg_centres[sel.context_idx])
        class_scores.append(sel.fg_scores[sel.class_idx])
        context_scores.append(sel.bg_scores[sel.context_idx])
        stats[name] = {
            "class_prototypes": composition(pool.fg[c].tags, fg.labels, sel.class_idx),
            "rejected_fg_centres": composition(pool.fg[c].tags, fg.labels, _complement(sel.class_idx, len(fg.centres))),
            "context_prototypes": composition(pool.bg[c].tags, bg.labels, sel.context_idx) if bg is not None else {},
            "fg_pool": pool.fg[c].seen,
            "bg_pool": pool.bg[c].seen,
            "fg_sampled": len(fg_rows),
            "bg_sampled": len(bg_rows),
            "halo_share": pool.halo_share(c),
            "fg_scores": [round(float(v), 4) for v in sel.fg_scores],
            "bg_scores": [round(float(v), 4) for v in sel.bg_scores],
            "fg_cluster_sizes": fg.counts.tolist(),
            "kmeans_converged": fg.converged and (bg is None or bg.converged),
            "kmeans_iterations": [fg.iterations, bg.iterations if bg is not None else 0],
        }
    return Prototypes(class_protos, context_protos, {}, stats, class_scores, context_scores)


def cluster(rows: Tensor, s: PrototypeSettings, numpy_rows: np.random.RandomState | None = None) -> KMeansResult:
    """One side's k-means under the run's settings (K, metric, initialisation, stopping rule);
    with ``numpy_rows`` its initial rows are the next draw of that stream (:func:`numpy_starts`)."""
    start = numpy_starts(numpy_rows, len(rows), s.k) if numpy_rows is not None else None
    return kmeans(
        rows, s.k, metric=s.kmeans_metric, max_iter=s.kmeans_max_iter, tol=s.kmeans_tol, seed=s.seed,
        init=s.kmeans_init, stop=s.kmeans_stop, init_sample=s.kmeans_init_sample, start=start,
    )  # fmt: skip


def numpy_starts(rng: np.random.RandomState, n: int, k: int) -> Tensor:
    """The initial rows kmeans_pytorch 0.3 draws: ``np.random.choice(n, k, replace=False)``.

    The official code runs it on each class in turn, foreground then background, from numpy's
    global (unseeded) stream; ``lpcam.kmeans_rng=numpy`` draws the same calls from
    ``RandomState(lpcam.seed)``, so that a draw equals the official code's after
    ``np.random.seed(lpcam.seed)``. Fewer rows than K: all of them (the official code fails)."""
    return torch.from_numpy(rng.choice(n, min(k, n), replace=False).astype(np.int64))


def _complement(idx: Tensor, n: int) -> Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[idx] = False
    return torch.nonzero(keep).flatten()


def composition(tags: Tensor, labels: Tensor, centres: Tensor) -> dict[str, int]:
    """How many of the given centres are mostly (by their members' tags) off the object, on the
    discriminative part, on the shared part...: tells whether selection kept bodies or halo."""
    counts: dict[str, int] = {}
    for k in centres.tolist():
        member = tags[labels == k]
        member = member[member >= 0]
        name = TAG_NAMES[int(member.mode().values)] if len(member) else "unknown"
        counts[name] = counts.get(name, 0) + 1
    return counts
