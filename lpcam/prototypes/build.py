"""Building LPCAM prototypes from a trained classifier: features → k-means → selection."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from lpcam.atomic import torch_save
from lpcam.cache import digest, locked, weights_digest
from lpcam.cams.cam import cam_maps
from lpcam.cams.multiscale import multiscale_features
from lpcam.models.classifier import Classifier
from lpcam.prototypes.kmeans import kmeans
from lpcam.prototypes.pool import TAG_NAMES, FeaturePool, feature_tags
from lpcam.prototypes.selection import select_prototypes
from lpcam.prototypes.store import Prototypes

log = logging.getLogger(__name__)


@torch.no_grad()
def collect_features(
    model: Classifier,
    batches: Iterable[dict],
    num_classes: int,
    tau: float = 0.1,
    max_features_per_class: int = 20000,
    seed: int = 0,
    progress: bool = True,
) -> FeaturePool:
    """Split every training image's local features by its CAM for each labelled class.

    As the official code: features of the full image at one scale; the class-c CAM resized to the
    feature grid (here computed at that scale with its flip, on the same grid, which avoids a
    second pass) marks foreground (> τ) and background (< τ) positions. The ground truth under
    each position is kept as a tag, for diagnostics only (halo share, prototype composition).
    """
    pool: FeaturePool | None = None
    weights = model.weights
    device = weights.device
    for batch in tqdm(batches, desc="prototypes: features", disable=not progress, leave=False):
        images = batch["image"].to(device)
        views = multiscale_features(model.features, images, scales=(1.0,), flip=True)
        feats = views[0][0]  # the unflipped view
        cams = cam_maps(views, weights, feats.shape[-2:])
        if pool is None:
            pool = FeaturePool(num_classes, feats.shape[1], max_features_per_class, seed)
        grid = feats.shape[-2:]
        masks = F.interpolate(batch["mask"][:, None].float(), size=grid, mode="nearest")[:, 0].long()
        parts = F.interpolate(batch["parts"][:, None].float(), size=grid, mode="nearest")[:, 0].long()
        for b in range(len(images)):
            for c in torch.nonzero(batch["label"][b]).flatten().tolist():
                tags = feature_tags(masks[b], parts[b], c)
                pool.add(c, feats[b].cpu(), (cams[b, c] > tau).cpu(), tags)
    if pool is None:
        raise ValueError("prototypes: the training split yielded no images")
    return pool


def cached_features(
    model: Classifier,
    batches: Iterable[dict],
    num_classes: int,
    tau: float,
    max_features_per_class: int,
    seed: int,
    progress: bool,
    cache_dir: str | Path,
    dataset_key: str,
) -> tuple[FeaturePool, bool]:
    """:func:`collect_features` through the sweep's feature cache (see :mod:`lpcam.cache`): the
    pool is keyed by the classifier's weights, the dataset and the sampling settings, so jobs that
    differ only in K, μ or the rule cluster the same features. Returns the pool and whether it
    came from the cache."""
    key = digest([weights_digest(model), dataset_key, tau, max_features_per_class, seed])
    path = Path(cache_dir) / "features" / f"{key}.pt"
    with locked(path, "feature pool"):
        if path.is_file():
            log.info("prototypes: features from the cache (%s)", path)
            return FeaturePool.from_state_dict(torch.load(path, weights_only=False)), True
        pool = collect_features(model, batches, num_classes, tau, max_features_per_class, seed, progress)
        torch_save(pool.state_dict(), path)
        return pool, False


def cluster_and_select(
    pool: FeaturePool,
    weights: Tensor,
    class_names: list[str],
    k: int = 12,
    mu_fg: float = 0.9,
    mu_bg: float = 0.9,
    context_min: float = 0.05,
    score: str = "softmax",
    keep_best: bool = True,
    kmeans_metric: str = "cosine",
    kmeans_max_iter: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], dict]:
    """k-means on each class's foreground and background samples; keep the centres the rule picks.
    Returns class prototypes, context prototypes, their scores, and per-class diagnostics."""
    weights = weights.detach().float().cpu()
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
        fg = kmeans(fg_rows, k, metric=kmeans_metric, max_iter=kmeans_max_iter, seed=seed)
        bg = kmeans(bg_rows, k, metric=kmeans_metric, max_iter=kmeans_max_iter, seed=seed) if len(bg_rows) else None
        bg_centres = bg.centres if bg is not None else weights.new_zeros(0, weights.shape[1])
        sel = select_prototypes(fg.centres, bg_centres, c, weights, mu_fg, mu_bg, context_min, score, keep_best)
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
            "fg_scores": [round(float(s), 4) for s in sel.fg_scores],
            "bg_scores": [round(float(s), 4) for s in sel.bg_scores],
            "fg_cluster_sizes": fg.counts.tolist(),
            "kmeans_converged": fg.converged and (bg is None or bg.converged),
        }
    return class_protos, context_protos, class_scores, context_scores, stats


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


def build_prototypes(
    model: Classifier,
    batches: Iterable[dict],
    class_names: list[str],
    dataset: str = "",
    k: int = 12,
    tau: float = 0.1,
    mu_fg: float = 0.9,
    mu_bg: float = 0.9,
    context_min: float = 0.05,
    score: str = "softmax",
    keep_best: bool = True,
    max_features_per_class: int = 20000,
    kmeans_metric: str = "cosine",
    kmeans_max_iter: int = 100,
    seed: int = 0,
    progress: bool = True,
    feature_cache: str | Path | None = None,
    dataset_key: str = "",
) -> Prototypes:
    """The whole build, with the settings and timings recorded in the result's ``meta``.

    With ``feature_cache`` (a cache directory) the feature pool is shared with other jobs; the
    ``features`` timing is then the time to load it."""
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    if feature_cache is not None:
        pool, _ = cached_features(
            model, batches, len(class_names), tau, max_features_per_class, seed, progress, feature_cache, dataset_key
        )
    else:
        pool = collect_features(model, batches, len(class_names), tau, max_features_per_class, seed, progress)
    t1 = time.perf_counter()
    fg, ctx, fg_scores, ctx_scores, stats = cluster_and_select(
        pool, model.weights, class_names, k, mu_fg, mu_bg, context_min, score, keep_best,
        kmeans_metric, kmeans_max_iter, seed, progress,
    )  # fmt: skip
    t2 = time.perf_counter()
    model.train(was_training)
    backbone = model.backbone
    meta = {
        "backbone": backbone.name,
        "layer": backbone.layer,
        "dim": backbone.out_channels,
        "class_names": list(class_names),
        "dataset": dataset,
        "k": k,
        "tau": tau,
        "mu_fg": mu_fg,
        "mu_bg": mu_bg,
        "context_min": context_min,
        "score": score,
        "keep_best": keep_best,
        "max_features_per_class": max_features_per_class,
        "kmeans_metric": kmeans_metric,
        "kmeans_max_iter": kmeans_max_iter,
        "seed": seed,
        "timings_s": {"features": t1 - t0, "clustering": t2 - t1},
    }
    return Prototypes(fg, ctx, meta, stats, fg_scores, ctx_scores)
