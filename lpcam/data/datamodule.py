"""One LightningDataModule for every dataset in the VOC layout (and the generated benchmark)."""

from __future__ import annotations

import logging
import time
from functools import cached_property
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
import numpy as np
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Subset

from lpcam.data.checks import CheckCache, SplitCheck, check_classes, check_split, mode_counts, mode_summary
from lpcam.data.fingerprint import DataContent, FileGroup, content_of
from lpcam.data.generated import DatasetGenerator
from lpcam.data.settings import DataSettings
from lpcam.data.transforms import TrainTransform
from lpcam.data.prepare_coco import prepare_coco
from lpcam.data.prepare_voc import prepare_voc
from lpcam.data.voc import VOCSegmentation, read_class_names, read_split
from lpcam.errors import InputError

log = logging.getLogger(__name__)


def _download_voc(root: Path) -> None:
    prepared = prepare_voc(root)
    counts = ", ".join(f"{n:,} {split}" for split, n in prepared.counts.items())
    log.info("dataset voc: %s %s (%s)", prepared.root, "complete" if prepared.done_before else "downloaded and prepared", counts)


def _download_coco(root: Path) -> None:
    prepare_coco(root, yes=False)  # a complete tree passes; else its 20 GB are said and lpcam-data's --yes asked for


DOWNLOADABLE = {"voc": _download_voc, "coco": _download_coco}  # dataset.name -> what dataset.download=true runs on dataset.root


class SegmentationDataModule(pl.LightningDataModule):
    """Splits of one dataset for each stage.

    - ``train_split``: classifier training (augmented) and prototype building (not augmented);
      VOC's ``train_aug``.
    - ``val_split``: checkpoint selection by validation loss.
    - ``eval_split``: seed evaluation of the CAMs; VOC's ``train``, as in the papers.
    - ``prototype_split``: the images whose features become prototypes, ``train_split`` unless
      given (the official code builds VOC's from ``train``, the seed-evaluation split: 7× fewer
      images); ``images_per_class`` (seeded by ``seed``) then keeps at most that many images of
      each class, as the official code does on COCO.

    ``generator`` (optional) writes the dataset in ``prepare_data`` when it is not there yet,
    which is how the embedded benchmark appears on a fresh clone; its data then lives in
    ``root/<fingerprint of the generator's parameters>``. ``download=true`` downloads and prepares
    VOC there instead when it is not complete yet (:mod:`lpcam.data.prepare_voc`); for COCO it
    accepts a tree ``lpcam-data coco DIR --yes`` prepared and otherwise asks for that command.

    The settings are checked when the datamodule is built (:class:`DataSettings`), the files in
    ``prepare_data`` (:meth:`preflight`, :mod:`lpcam.data.checks`): both before any training.
    ``bad_images="skip"`` leaves unreadable images out (:attr:`skipped`) instead of stopping.
    ``check_cache_dir`` (set by the pipeline: ``cache.dir/data_checks``) keeps what the
    preflight read from each file, so reruns only stat them.
    """

    check_cache_dir: Path | None = None

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
        prototype_split: str | None = None,
        images_per_class: int | None = None,
        seed: int = 0,
        bad_images: str = "error",
        download: bool = False,
    ) -> None:
        super().__init__()
        self.settings = DataSettings.of(
            root, class_names, name=name, train_split=train_split, val_split=val_split, eval_split=eval_split,
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, bad_images=bad_images,
            prototype_split=prototype_split, images_per_class=images_per_class,
        )  # fmt: skip
        self.bad_images = bad_images
        self.root = Path(root).expanduser()
        if generator is not None:
            self.root = self.root / generator.fingerprint()
        self.name = name
        self.generator = generator
        self.download = download
        if download and name not in DOWNLOADABLE:
            raise InputError(f"dataset.download=true: lpcam downloads {', '.join(DOWNLOADABLE)}, not {name!r}; put the data in {self.root}")
        self._class_names = list(class_names) if class_names else (generator.class_names if generator else None)
        self.train_split, self.val_split, self.eval_split = train_split, val_split, eval_split
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.train_transform = train_transform
        self.prototype_split = prototype_split or train_split
        self.images_per_class, self.seed = images_per_class, seed
        self.checks: dict[str, SplitCheck] = {}  # the preflight's findings per split
        self.skipped: dict[str, list[str]] = {}  # split -> ids left out (bad_images=skip)

    @property
    def class_names(self) -> list[str]:
        return read_class_names(self.root, self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def classes_source(self) -> str:
        """Where the class list comes from, for the errors about it."""
        if self._class_names:
            return "dataset.class_names"
        return str(self.root / "classes.txt") if (self.root / "classes.txt").is_file() else "VOC's class list"

    def prepare_data(self) -> None:
        """Generate the dataset if it has a generator; then check every split's files, so a wrong
        root or a bad file fails at once, in one line naming it, before any training."""
        if self.generator is not None:
            self.generator.write(self.root)
        if self.download:
            DOWNLOADABLE[self.name](self.root)
        self.preflight()

    def preflight(self, splits: Sequence[str] | None = None) -> dict[str, SplitCheck]:
        """Check the images and masks of ``splits`` (default: the training, validation and
        evaluation splits, and then that every class has a training image), once per split."""
        default = splits is None
        todo = [s for s in dict.fromkeys(splits or (self.train_split, self.val_split, self.eval_split, self.prototype_split)) if s and s not in self.checks]
        start = time.perf_counter()
        names = self.class_names
        cache = CheckCache.for_root(self.check_cache_dir, self.root)
        try:
            for split in todo:
                dataset = self._open(split)
                self.checks[split] = found = check_split(
                    split, dataset.source, dataset.preflight_items(), len(names), self.bad_images, cache
                )
                for image_id, reason in found.skipped:
                    log.warning("left out (dataset.bad_images=skip): %s", reason)
                if found.skipped:
                    self.skipped[split] = [image_id for image_id, _ in found.skipped]
        finally:
            cache.save()  # what was read stays read, also when a file failed
        if default:
            check_classes(self.checks[self.train_split], names, self.classes_source)
        if not todo:
            return self.checks
        modes = mode_counts(self.checks[split] for split in todo)
        log.info(
            "dataset %s: %d images of %s checked in %.2f s%s%s", self.name,
            sum(self.checks[s].images for s in todo), ", ".join(todo), time.perf_counter() - start,
            f"; {sum(len(v) for v in self.skipped.values())} left out as unreadable" if self.skipped else "",
            f"; read as RGB: {mode_summary(modes)}" if modes else "",
        )  # fmt: skip
        return self.checks

    def data_report(self) -> dict:
        """What the preflight did to the data, for results.json: the images left out per split,
        and how many images of each non-RGB mode were read as RGB."""
        return {
            "bad_images": self.bad_images,
            "skipped_images": {split: list(ids) for split, ids in self.skipped.items()},
            "skipped_count": len(set().union(*self.skipped.values())),  # images, each counted once
            "converted_to_rgb": mode_counts(self.checks.values()),
        }

    def content_files(self, extra: Sequence[str] = ()) -> dict[str, FileGroup]:
        """The files a classifier trained here and its prototype features depend on: those of the
        training and validation splits (the evaluation split changes neither), and of the
        ``extra`` splits."""
        splits = list(dict.fromkeys(s for s in (self.train_split, self.val_split, *extra) if s))
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

    @cached_property
    def prototype_content_key(self) -> str:
        """The content digest the feature cache keys on: :attr:`content`'s, with the prototype
        split's files when the prototypes come from another split."""
        if self.prototype_split in (self.train_split, self.val_split):
            return self.content.key
        return content_of(self.content_files([self.prototype_split])).key

    def dataset(self, split: str, augment: bool = False) -> VOCSegmentation:
        """The split's dataset, less the images the preflight left out."""
        dataset = self._open(split, augment)
        if self.skipped.get(split):
            dataset.drop(set(self.skipped[split]))
        return dataset

    def _open(self, split: str, augment: bool = False) -> VOCSegmentation:
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

    def prototype_indices(self, dataset) -> Sequence[int]:
        """Which images of the prototype split are used: all, or ``images_per_class`` drawn
        (seeded) from each class's images; every labelled class of a drawn image contributes its
        features, so a class gets at least that many images when it has them."""
        if not self.images_per_class:
            return range(len(dataset))
        rng = np.random.default_rng(self.seed)
        chosen: set[int] = set()
        for images in dataset.images_of_class:
            take = min(self.images_per_class, len(images))
            chosen.update(rng.choice(images, size=take, replace=False).tolist() if take else [])
        return sorted(chosen)

    def prototype_selection(self) -> dict:
        """Which images the prototypes come from, as recorded in a prototypes file's ``meta``: a
        run with another selection does not reuse the prototypes its checkpoint carries."""
        return {"split": self.prototype_split, "images_per_class": self.images_per_class,
                "seed": self.seed if self.images_per_class else None}  # fmt: skip

    def prototype_dataloader(self) -> DataLoader:
        """The images prototypes are built from, unaugmented and in a fixed order."""
        dataset = self.dataset(self.prototype_split)
        indices = self.prototype_indices(dataset)
        if len(indices) < len(dataset):
            dataset = Subset(dataset, list(indices))
        return DataLoader(dataset, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def split_dataloader(self, split: str) -> DataLoader:
        """Any split, unaugmented and in order (the export stage's images); checked first."""
        self.preflight([split])
        return self._loader(split, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """The seed-evaluation split, in order. Under torch.distributed each process gets every
        ``world``-th image and none twice: Lightning's default sampler pads the shards to equal
        length by repeating images, which would count those images' pixels twice in the summed
        confusions (measured: CAM 49.73 against 49.80 on 15 images over 2 processes)."""
        loader = self._loader(self.eval_split, self.eval_batch_size)
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return loader
        sampler = UnrepeatedDistributedSampler(loader.dataset, shuffle=False)
        return DataLoader(loader.dataset, batch_size=self.eval_batch_size, sampler=sampler, num_workers=self.num_workers)

    predict_dataloader = test_dataloader
