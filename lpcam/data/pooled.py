"""The frozen-backbone mode's training data: each image's pooled backbone feature, computed once.

With ``model.freeze_backbone=true`` only the 1×1 classifier learns, and it sees an image only
through the global average of the backbone's feature map. That average does not change from one
epoch to the next, so it is computed once per training and validation image, before the first
epoch, and the epochs then cost almost nothing: the cheap, common way to study the CAMs of a
pre-trained network on a CPU. The price is **no augmentation**: the images are read unaugmented
(as the prototypes and the evaluation read them), whatever ``dataset.train_transform`` says; each
training image contributes one feature vector, in a reshuffled order every epoch.

The features are computed in float32 (whatever ``trainer.precision``), in eval mode and without
gradients, on the trainer's device, and kept in memory on the CPU: N × D floats (2,000 × 1,280
for the benchmark with EfficientNet-Lite's head, 10 MB).
"""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lpcam.data.datamodule import SegmentationDataModule

log = logging.getLogger(__name__)


class PooledDataset(Dataset):
    """(N, D) pooled features and (N, C) labels as items ``{"pooled", "label"}``."""

    def __init__(self, pooled: Tensor, labels: Tensor) -> None:
        if len(pooled) != len(labels):
            raise ValueError(f"{len(pooled)} pooled features for {len(labels)} labels")
        self.pooled, self.labels = pooled, labels

    def __len__(self) -> int:
        return len(self.pooled)

    def __getitem__(self, i: int) -> dict:
        return {"pooled": self.pooled[i], "label": self.labels[i]}


@torch.no_grad()
def pool_features(backbone: nn.Module, loader: DataLoader, device: torch.device, desc: str, progress: bool = True) -> PooledDataset:
    """Every image's feature map averaged over positions (what the classifier's pooling gives),
    with its label; the backbone in eval mode, its training mode put back after."""
    was_training = backbone.training
    backbone.eval().to(device)
    pooled, labels = [], []
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            feats = backbone(batch["image"].to(device)).float()
            pooled.append(feats.mean((2, 3)).cpu())
            labels.append(batch["label"].float())
    finally:
        backbone.train(was_training)
    if not pooled:
        raise ValueError(f"{desc}: no images")
    return PooledDataset(torch.cat(pooled), torch.cat(labels))


class PooledFeatures(pl.LightningDataModule):
    """The training and validation splits of ``images`` as pooled features of ``backbone``,
    computed in :meth:`setup` (once; on the trainer's device), batched as ``images`` batches them.

    ``seconds`` is the time the feature pass took (part of the classifier's training cost).
    """

    def __init__(self, images: SegmentationDataModule, backbone: nn.Module, progress: bool = True) -> None:
        super().__init__()
        self.images, self.backbone, self.progress = images, backbone, progress
        self.splits: dict[str, PooledDataset] = {}
        self.seconds = 0.0

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        start = time.perf_counter()
        todo = [s for s in (self.images.train_split, self.images.val_split) if s and s not in self.splits]
        for split in todo:
            loader = self.images.split_dataloader(split)  # unaugmented, in order
            self.splits[split] = pool_features(self.backbone, loader, device, f"frozen backbone: features of {split}", self.progress)
        if todo:
            self.seconds += time.perf_counter() - start
            sizes = ", ".join(f"{len(self.splits[s])} of {s}" for s in todo)
            log.info("frozen backbone: pooled features of %s images computed once in %.1f s (no augmentation)", sizes, self.seconds)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits[self.images.train_split], batch_size=self.images.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        split = self.images.val_split
        return DataLoader(self.splits[split], batch_size=self.images.eval_batch_size) if split else []
