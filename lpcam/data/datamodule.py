"""One LightningDataModule for every dataset in the VOC layout (and the generated benchmark)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from lpcam.data.fingerprint import DataContent, FileGroup, content_of
from lpcam.data.generated import DatasetGenerator
from lpcam.data.transforms import TrainTransform
from lpcam.data.voc import VOCSegmentation, read_class_names, read_split


class SegmentationDataModule(pl.LightningDataModule):
    """Splits of one dataset for each stage.

    - ``train_split``: classifier training (augmented) and prototype building (not augmented);
      VOC's ``train_aug``.
    - ``val_split``: checkpoint selection by validation loss.
    - ``eval_split``: seed evaluation of the CAMs; VOC's ``train``, as in the papers.

    ``generator`` (optional) writes the dataset in ``prepare_data`` when it is not there yet,
    which is how the embedded benchmark appears on a fresh clone; its data then lives in
    ``root/<fingerprint of the generator's parameters>``.
    """

    def __init__(
        self,
        root: str,
        name: str = "voc",
        class_names: Sequence[str] | None = None,
        train_split: str = "train_aug",
        val_split: str | None = "val",
        eval_split: str = "train",
        batch_size: int = 16,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        train_transform: TrainTransform | None = None,
        generator: DatasetGenerator | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        if generator is not None:
            self.root = self.root / generator.fingerprint()
        self.name = name
        self.generator = generator
        self._class_names = list(class_names) if class_names else (generator.class_names if generator else None)
        self.train_split, self.val_split, self.eval_split = train_split, val_split, eval_split
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.train_transform = train_transform

    @property
    def class_names(self) -> list[str]:
        return read_class_names(self.root, self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        """Generate the dataset if it has a generator; then check every split is readable, so a
        wrong root fails at once with the expected layout, before any training."""
        if self.generator is not None:
            self.generator.write(self.root)
        for split in (self.train_split, self.val_split, self.eval_split):
            if split:
                self.dataset(split)

    def content_files(self) -> dict[str, FileGroup]:
        """The files a classifier trained here and its prototype features depend on: those of the
        training and validation splits (the evaluation split changes neither)."""
        splits = [s for s in (self.train_split, self.val_split) if s]
        ids = sorted(set().union(*(read_split(self.root, s) for s in splits)))
        folders = {"images": ("JPEGImages", ".jpg"), "masks": ("SegmentationClass", ".png"), "parts": ("SegmentationPart", ".png")}
        return {
            "split files": FileGroup([self.root / "ImageSets" / "Segmentation" / f"{s}.txt" for s in splits], True),
            "classes.txt": FileGroup([self.root / "classes.txt"], True),
            "cls_labels.npy": FileGroup([self.root / "cls_labels.npy"], True),
            **{
                kind: FileGroup([self.root / folder / f"{i}{ext}" for i in ids], False)
                for kind, (folder, ext) in folders.items()
                if kind != "parts" or (self.root / folder).is_dir()
            },
        }

    @cached_property
    def content(self) -> DataContent:
        """The digest of :meth:`content_files` (read once, after ``prepare_data``), which the
        classifier and feature caches' keys include (:mod:`lpcam.data.fingerprint`)."""
        return content_of(self.content_files())

    def dataset(self, split: str, augment: bool = False) -> VOCSegmentation:
        return VOCSegmentation(
            self.root, split, self._class_names, transform=self.train_transform if augment else None
        )

    def _loader(self, split: str, batch_size: int, augment: bool = False, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.dataset(split, augment),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_split, self.batch_size, augment=True, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_split, self.eval_batch_size) if self.val_split else []

    def prototype_dataloader(self) -> DataLoader:
        """The training images, unaugmented and in a fixed order, for building prototypes."""
        return self._loader(self.train_split, self.eval_batch_size)

    def split_dataloader(self, split: str) -> DataLoader:
        """Any split, unaugmented and in order (the export stage's images)."""
        return self._loader(split, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_split, self.eval_batch_size)

    predict_dataloader = test_dataloader
