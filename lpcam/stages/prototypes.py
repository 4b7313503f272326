"""The prototype stage: a trained classifier's features over the training split → k-means → selection.

It sits above both algorithm packages: it uses :mod:`lpcam.cams` (the CAM that splits foreground
from background features) and :mod:`lpcam.prototypes` (pool, clustering, store), and neither of
them imports it. :class:`PrototypeCallback` runs it when classifier training ends.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from lpcam.atomic import torch_save
from lpcam.cache import FeatureCache, locked, weights_digest
from lpcam.cams.cam import cam_maps
from lpcam.cams.multiscale import multiscale_features
from lpcam.errors import InputError
from lpcam.models.classifier import Classifier
from lpcam.prototypes.clustering import cluster_and_select
from lpcam.prototypes.pool import POOL_DTYPES, FeaturePool, feature_tags, merge_pools, pool_cap, row_bytes
from lpcam.prototypes.settings import PrototypeSettings
from lpcam.prototypes.store import Prototypes
from lpcam.safe_load import torch_load
from lpcam.stages.provenance import Provenance

log = logging.getLogger(__name__)


@torch.no_grad()
def collect_features(
    model: Classifier, batches: Iterable[dict], num_classes: int, settings: PrototypeSettings, progress: bool = True
) -> FeaturePool:
    """Split every training image's local features by its CAM for each labelled class.

    As the official code: features of the full image at one scale, no flip; the class-c CAM on the
    feature grid (:func:`split_cams`) marks foreground (> τ) and background positions: those ≤ τ, or
    with ``lpcam.tau_ties=drop`` those < τ, the official code's rule (a position exactly at τ is on
    neither side). The ground
    truth under each position is kept as a tag, for diagnostics only (halo share, prototype composition).
    Each batch is split, tagged and sampled whole (:meth:`FeaturePool.add_batch`).
    ``lpcam.feature_dtype=bfloat16`` runs the forward pass under autocast; the CAM, the split and
    the pool then work on its output in float32 (or ``lpcam.pool_dtype``).
    """
    pool: FeaturePool | None = None
    device = model.weights.device
    for batch in tqdm(batches, desc="prototypes: features", disable=not progress, leave=False):
        images = batch["image"].to(device)
        feats, cams = split_cams(model, images, settings)
        if pool is None:
            pool = new_pool(num_classes, feats.shape[1], settings)
        grid = feats.shape[-2:]
        masks = F.interpolate(batch["mask"][:, None].float(), size=grid, mode="nearest")[:, 0].long().to(device)
        parts = F.interpolate(batch["parts"][:, None].float(), size=grid, mode="nearest")[:, 0].long().to(device)
        pairs = torch.nonzero(batch["label"].to(device) > 0)  # (image, class), image-major
        image, cls = pairs[:, 0], pairs[:, 1]
        tags = feature_tags(masks[image], parts[image], cls)
        split = cams[image, cls]
        is_bg = split < settings.tau if settings.tau_ties == "drop" else None  # None: every position not > τ
        pool.add_batch(feats, pairs, split > settings.tau, tags, is_bg)
    if pool is None:
        raise ValueError("prototypes: the training split yielded no images")
    return pool


def split_cams(model: Classifier, images: Tensor, settings: PrototypeSettings) -> tuple[Tensor, Tensor]:
    """(B, D, h, w) features of the images at scale 1 (unflipped) and (B, C, h, w) the CAMs that
    split them, each max-normalised, on the same grid.

    The CAM sees ``lpcam.split_scales`` (each with its mirror image when ``split_flip``), merged as
    the evaluation merges CAM's views. ``split_resolution``: ``feature_grid`` computes it on the
    feature grid (the default: scale 1 with its flip, whose features the pool needs anyway, so no
    second pass); ``image`` at the image's size, then resized (nearest) to the feature grid, as the
    official code does with its multi-scale CAM (``high_res``). ``split_rescale`` and
    ``split_upsample`` are the evaluation's ``rescale`` and ``upsample`` for this CAM (the preset
    makes them the same). The pool's features reuse the scale-1 view when the CAM has one.
    ``lpcam.feature_dtype=bfloat16`` runs the forward passes under autocast; the CAMs are computed
    from their output in float32.
    """
    scales = settings.split_scales
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=settings.feature_dtype == "bfloat16"):
        views = multiscale_features(model.features, images, scales, settings.split_flip, settings.split_rescale)
        views = [v.float() for v in views]
        feats = views[scales.index(1.0)][0] if 1.0 in scales else model.features(images).float()
    grid = feats.shape[-2:]
    if settings.split_resolution == "feature_grid":
        return feats, cam_maps(views, model.weights, grid)
    full = cam_maps(views, model.weights, images.shape[-2:], settings.split_upsample)
    return feats, F.interpolate(full, size=grid, mode="nearest")


def new_pool(num_classes: int, dim: int, settings: PrototypeSettings) -> FeaturePool:
    """An empty pool whose reservoirs fit ``lpcam.pool_memory_mb`` (and ``max_features_per_class``)."""
    dtype = POOL_DTYPES[settings.pool_dtype]
    cap = pool_cap(settings.pool_memory_mb, num_classes, dim, dtype, settings.max_features_per_class)
    if cap < settings.k:
        raise InputError(
            f"lpcam.pool_memory_mb={settings.pool_memory_mb}: holds only {cap} {dim}-d features per class and side "
            f"for {num_classes} classes, fewer than lpcam.k={settings.k}; raise the budget"
        )
    pool = FeaturePool(num_classes, dim, cap, settings.seed, dtype)
    log.info(
        "prototypes: at most %d features per class and side (%d classes, %d-d, %s): %.0f MB at most",
        cap, num_classes, dim, settings.pool_dtype, 2 * num_classes * cap * row_bytes(dim, dtype) / 2**20,
    )  # fmt: skip
    return pool


def world() -> tuple[int, int]:
    """(rank, number of processes) of the torch.distributed group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(loader: DataLoader, rank: int, size: int) -> DataLoader:
    """The ``rank``-th of ``size`` contiguous shards of a loader's dataset, in order, same batches."""
    n = len(loader.dataset)
    bounds = [n * r // size for r in range(size + 1)]
    part = Subset(loader.dataset, range(bounds[rank], bounds[rank + 1]))
    return DataLoader(part, batch_size=loader.batch_size, num_workers=loader.num_workers)


def gathered_features(
    model: Classifier, batches: DataLoader, num_classes: int, settings: PrototypeSettings, progress: bool = True
) -> FeaturePool:
    """:func:`collect_features`; under torch.distributed each process samples a contiguous shard,
    and the shards' pools are gathered and merged (:func:`merge_pools`) identically on every
    process, so all of them cluster the same pool, a uniform sample of every feature seen."""
    rank, size = world()
    if size == 1:
        return collect_features(model, batches, num_classes, settings, progress)
    local = collect_features(model, shard(batches, rank, size), num_classes, settings, progress and rank == 0)
    states: list = [None] * size
    dist.all_gather_object(states, local.state_dict())
    return merge_pools(states, settings.seed)


def pooled_features(
    model: Classifier,
    batches: DataLoader,
    num_classes: int,
    settings: PrototypeSettings,
    cache: FeatureCache | None = None,
    progress: bool = True,
) -> FeaturePool:
    """:func:`gathered_features`, through the sweep's feature cache when one is given: the pool is
    keyed by the classifier's weights, the dataset and the sampling settings, so jobs that differ
    only in K, μ or the rule cluster the same features. Under torch.distributed the processes of
    one job gather their shards without the cache's lock (one of them would wait on the others
    while they wait on it in the gather), and the first process publishes the pool."""
    if cache is None:
        return gathered_features(model, batches, num_classes, settings, progress)
    path = cache.path(weights_digest(model), settings.sampling_dict())
    rank, size = world()
    if size > 1:
        cached = [path.is_file()]
        dist.broadcast_object_list(cached, src=0)  # one decision for all: a split one would hang the gather
        if cached[0]:
            return FeaturePool.from_state_dict(torch_load(path, "feature cache entry"))
        pool = gathered_features(model, batches, num_classes, settings, progress)
        if rank == 0:
            with locked(path, "feature pool"):  # no collective inside: the other processes do not wait on it
                torch_save(pool.state_dict(), path)
                cache.evict(keep=path)
        return pool
    with locked(path, "feature pool"):
        if path.is_file():
            log.info("prototypes: features from the cache (%s)", path)
            cache.touch(path)
            return FeaturePool.from_state_dict(torch_load(path, "feature cache entry"))
        pool = collect_features(model, batches, num_classes, settings, progress)
        torch_save(pool.state_dict(), path)
        cache.evict(keep=path)
        return pool


def build_prototypes(
    model: Classifier,
    batches: DataLoader,
    class_names: list[str],
    settings: PrototypeSettings,
    dataset: str = "",
    cache: FeatureCache | None = None,
    progress: bool = True,
    images: dict | None = None,
) -> tuple[Prototypes, dict[str, float]]:
    """The whole build. Returns the prototypes, whose ``meta`` records the settings, the feature
    space and the ``images`` (see ``SegmentationDataModule.prototype_selection``) that built them,
    and the seconds of its two steps (``features`` is the time to load the pool when it came from
    the cache)."""
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    pool = pooled_features(model, batches, len(class_names), settings, cache, progress)
    t1 = time.perf_counter()
    protos = cluster_and_select(pool, model.weights, class_names, settings, progress)
    t2 = time.perf_counter()
    model.train(was_training)
    backbone = model.backbone
    protos.meta = {
        "backbone": backbone.name,
        "layer": backbone.layer,
        "dim": backbone.out_channels,
        "class_names": list(class_names),
        "dataset": dataset,
        "images": images,
        "weights": weights_digest(model),  # the classifier that built them: a file is checked against the run's
        **settings.as_dict(),
    }
    return protos, {"features": t1 - t0, "clustering": t2 - t1}


class PrototypeCallback(pl.Callback):
    """On fit end: reload the best checkpoint's weights, build the prototypes over the training
    split, save them to ``path`` and into the best checkpoint (so a checkpoint alone is enough to
    extract LPCAM later). What it built stays on the callback: ``prototypes`` and ``provenance``.
    ``images`` is the datamodule of the images they come from, when the trainer's is not one (the
    frozen-backbone mode trains on pooled features).
    """

    def __init__(
        self,
        path: str | Path,
        settings: PrototypeSettings,
        cache: FeatureCache | None = None,
        progress: bool = True,
        images: pl.LightningDataModule | None = None,
    ) -> None:
        self.path = Path(path)
        self.settings = settings
        self.cache = cache
        self.progress = progress
        self.images = images
        self.prototypes: Prototypes | None = None
        self.provenance: Provenance | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Classifier) -> None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            pl_module.load_state_dict(torch_load(best, "checkpoint")["state_dict"])
        dm = self.images if self.images is not None else trainer.datamodule
        protos, seconds = build_prototypes(
            pl_module, dm.prototype_dataloader(), dm.class_names, self.settings, dm.name, self.cache, self.progress,
            dm.prototype_selection(),
        )
        if trainer.is_global_zero:
            protos.save(self.path)
            if best:
                protos.add_to_checkpoint(best)
        self.prototypes, self.provenance = protos, Provenance("built", str(self.path), seconds)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: Classifier, checkpoint: dict) -> None:
        if self.prototypes is not None:
            self.prototypes.into_checkpoint(checkpoint)
