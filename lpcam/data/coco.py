"""MS COCO 2014 for WSSS: image-level labels and seed-evaluation masks from the instance annotations.

Expected layout under ``root``::

    train2014/<file_name>.jpg, val2014/<file_name>.jpg        images, as in the annotation files
    annotations/instances_{train2014,val2014}.json           the instance annotations
    SegmentationClass/{train2014,val2014}/<image id>.png     (optional) pre-converted class-id masks

Masks come from the pre-converted PNGs when ``mask_dir`` is given (0 background, 1..80 in the
order of the sorted category ids, 255 ignore), else from the annotations with pycocotools: each
instance painted with its class, largest first so that small objects stay visible, crowd regions
ignored (255). Image-level labels are the categories of an image's non-crowd instances; images
without any are left out, as in WSSS practice.
"""

from __future__ import annotations

import contextlib
import io
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from lpcam.data.checks import BadMask, Item
from lpcam.data.datamodule import SegmentationDataModule
from lpcam.data.fingerprint import FileGroup
from lpcam.data.voc import DatasetLayoutError, read_mask, read_rgb, to_tensors

LAYOUT_HELP = (
    "expected the COCO 2014 layout: <split>/<file_name>.jpg and annotations/instances_<split>.json "
    "(from cocodataset.org), optionally SegmentationClass/<split>/<image id>.png"
)


def load_coco(root: Path, split: str):
    """pycocotools' index of ``annotations/instances_<split>.json`` (its progress prints silenced)."""
    from pycocotools.coco import COCO

    path = Path(root) / "annotations" / f"instances_{split}.json"
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: annotation file not found; {LAYOUT_HELP}")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def coco_class_names(coco) -> list[str]:
    """Class names in the order of the sorted category ids (the class index of the masks)."""
    return [coco.cats[c]["name"] for c in sorted(coco.getCatIds())]


class CocoSegmentation(Dataset):
    """COCO images with multi-hot labels and class-id masks; the same item dict as VOCSegmentation."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Callable[[dict], dict] | None = None,
        mask_dir: str | None = None,
        coco=None,
    ) -> None:
        self.root, self.split, self.transform = Path(root), split, transform
        self.coco = coco if coco is not None else load_coco(self.root, split)
        self.cat_index = {cat: i for i, cat in enumerate(sorted(self.coco.getCatIds()))}
        self.class_names = coco_class_names(self.coco)
        self.mask_dir = Path(mask_dir) if mask_dir else None
        # each image's classes (non-crowd instances), read once; images without any are left out
        classes = {i: self._categories(i) for i in sorted(self.coco.getImgIds())}
        self.ids = [i for i, cs in classes.items() if cs]
        self.classes = [classes[i] for i in self.ids]
        if not self.ids:
            raise DatasetLayoutError(f"{self.root}: split {split} has no image with a non-crowd annotation")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _annotations(self, image_id: int) -> list[dict]:
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id))

    def _categories(self, image_id: int) -> set[int]:
        return {self.cat_index[a["category_id"]] for a in self._annotations(image_id) if not a.get("iscrowd", 0)}

    @cached_property
    def images_of_class(self) -> list[list[int]]:
        """For each class, the dataset indices of the images labelled with it."""
        out: list[list[int]] = [[] for _ in self.class_names]
        for index, classes in enumerate(self.classes):
            for c in classes:
                out[c].append(index)
        return out

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def source(self) -> Path:
        """The annotation file listing this split's images (named in the errors about them)."""
        return self.root / "annotations" / f"instances_{self.split}.json"

    def image_path(self, image_id: int) -> Path:
        return self.root / self.split / self.coco.imgs[image_id]["file_name"]

    def mask_path(self, image_id: int) -> Path | None:
        return self.mask_dir / self.split / f"{image_id}.png" if self.mask_dir is not None else None

    def preflight_items(self) -> list[Item]:
        """Each image's files and classes (the preflight's input); masks made from the
        annotations have no file to check."""
        return [
            Item(str(image_id), self.image_path(image_id), self.mask_path(image_id), tuple(sorted(classes)))
            for image_id, classes in zip(self.ids, self.classes)
        ]

    def drop(self, ids: set[str]) -> None:
        """Leave these images out (the preflight's unreadable ones, with ``dataset.bad_images=skip``)."""
        kept = [(i, c) for i, c in zip(self.ids, self.classes) if str(i) not in ids]
        self.ids, self.classes = [i for i, _ in kept], [c for _, c in kept]
        self.__dict__.pop("images_of_class", None)

    def read_mask(self, image_id: int, height: int, width: int) -> np.ndarray:
        path = self.mask_path(image_id)
        if path is not None:
            if not path.is_file():
                raise DatasetLayoutError(f"{path}: pre-converted mask not found; {LAYOUT_HELP}")
            mask = read_mask(path)
            if mask.shape != (height, width):
                raise BadMask(f"{path}: mask {mask.shape} and image {(height, width)} differ in size")
            return mask
        mask = np.zeros((height, width), np.uint8)
        for ann in sorted(self._annotations(image_id), key=lambda a: -a.get("area", 0)):
            pixels = self.coco.annToMask(ann) > 0
            mask[pixels] = 255 if ann.get("iscrowd", 0) else self.cat_index[ann["category_id"]] + 1
        return mask

    def __getitem__(self, i: int) -> dict:
        image_id = self.ids[i]
        path = self.image_path(image_id)
        if not path.is_file():
            raise DatasetLayoutError(f"{path}: image not found; {LAYOUT_HELP}")
        image = read_rgb(path)
        mask = self.read_mask(image_id, *image.shape[:2])
        label = np.zeros(self.num_classes, np.float32)
        label[list(self.classes[i])] = 1
        item = {"image": image, "mask": mask, "parts": np.zeros_like(mask), "label": label, "index": i}
        if self.transform is not None:
            item = self.transform(item)
        return to_tensors(item)


class CocoDataModule(SegmentationDataModule):
    """The SegmentationDataModule's stages over COCO splits; prototypes from a per-class image sample.

    ``images_per_class`` (the paper: 100) bounds the prototype build on a dataset of 82k images:
    for each class that many of its images are drawn (seeded), and their union is the prototype
    split; every labelled class of a drawn image contributes its features, so a class gets at
    least that many images when it has them.
    """

    def __init__(
        self,
        root: str,
        name: str = "coco",
        train_split: str = "train2014",
        val_split: str | None = "val2014",
        eval_split: str = "train2014",
        mask_dir: str | None = None,
        images_per_class: int | None = 100,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(
            root, name=name, train_split=train_split, val_split=val_split, eval_split=eval_split,
            images_per_class=images_per_class, seed=seed, **kwargs,
        )  # fmt: skip
        self.mask_dir = mask_dir
        self._coco: dict[str, object] = {}

    def _index(self, split: str):
        if split not in self._coco:  # the annotation index is large: load each split once
            self._coco[split] = load_coco(self.root, split)
        return self._coco[split]

    @property
    def class_names(self) -> list[str]:
        return coco_class_names(self._index(self.train_split))

    @property
    def classes_source(self) -> str:
        return str(self.root / "annotations" / f"instances_{self.train_split}.json")

    def _open(self, split: str, augment: bool = False) -> CocoSegmentation:
        transform = self.train_transform if augment else None
        return CocoSegmentation(self.root, split, transform, self.mask_dir, coco=self._index(split))

    def content_files(self, extra: Sequence[str] = ()) -> dict[str, FileGroup]:
        """The annotation files, images and (with ``mask_dir``) masks of the training and validation
        splits (:meth:`SegmentationDataModule.content_files`); all by size and mtime, the
        annotation files being hundreds of MB."""
        splits = list(dict.fromkeys(s for s in (self.train_split, self.val_split, *extra) if s))
        groups = {
            "annotations": FileGroup([self.root / "annotations" / f"instances_{s}.json" for s in splits], False),
            "images": FileGroup(
                [self.root / s / info["file_name"] for s in splits for _, info in sorted(self._index(s).imgs.items())], False
            ),
        }
        if self.mask_dir:
            groups["masks"] = FileGroup(
                [Path(self.mask_dir) / s / f"{i}.png" for s in splits for i in sorted(self._index(s).imgs)], False
            )
        return groups
