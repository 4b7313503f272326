"""A reader for any dataset in the PASCAL VOC layout: VOC2012 itself, the embedded benchmark, or
a researcher's own classes.

Expected layout under ``root``::

    JPEGImages/<id>.jpg                  images
    SegmentationClass/<id>.png           class-id masks (palette or grey PNG), 0 = background, 255 = ignore
    ImageSets/Segmentation/<split>.txt   one image id per line
    classes.txt                          (optional) foreground class names, one per line
    cls_labels.npy                       (optional) {image id: multi-hot over foreground classes}
    SegmentationPart/<id>.png            (optional) part map: 0 none, 1 discriminative, 2 shared

Image-level labels are read from ``cls_labels.npy`` when it exists, else derived from the masks,
so a new dataset needs nothing but images, masks and split files.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lpcam.data.checks import (  # noqa: F401  (LAYOUT_HELP and DatasetLayoutError are this module's API too)
    LAYOUT_HELP, BadClasses, BadImage, BadMask, BadSplit, DatasetLayoutError, Item, duplicate_names, one_line,
)
from lpcam.errors import InputError
from lpcam.safe_load import load_label_file

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

def read_class_names(root: str | Path, class_names: Sequence[str] | None = None) -> list[str]:
    """Foreground class names: given explicitly, else ``classes.txt`` in the root, else VOC's 20.

    A name listed twice in classes.txt is refused: two classes would collapse into one entry of
    the per-class results."""
    if class_names:
        return list(class_names)
    path = Path(root) / "classes.txt"
    if path.is_file():
        names = [line.strip() for line in read_text(path, "class names", BadClasses).splitlines() if line.strip()]
        if names and names[0] == "background":
            names = names[1:]
        if not names:
            raise BadClasses(f"{path}: lists no class name; one foreground class per line (or delete it to use VOC's)")
        twice = duplicate_names(names)
        if twice is not None:
            raise BadClasses(f"{path}: class name {twice!r} appears twice; each class needs its own name (line = mask value)")
        return names
    return list(VOC_CLASSES)


def read_text(path: Path, what: str, error: type[InputError] = BadSplit) -> str:
    """A text file of the dataset (a split or classes.txt); a binary one is refused naming it."""
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file; expected {what}, one per line") from None


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Multi-hot image label over the foreground classes present in a class-id mask (0 background,
    255 ignore): what a dataset without a label file means by its image-level labels."""
    present = np.unique(mask)
    present = present[(present > 0) & (present <= num_classes)]
    onehot = np.zeros(num_classes, np.float32)
    onehot[present - 1] = 1
    return onehot


def split_path(root: str | Path, split: str) -> Path:
    return Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"


def read_split(root: str | Path, split: str) -> list[str]:
    path = split_path(root, split)
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: split file not found; {LAYOUT_HELP}")
    ids = [line.split()[0] for line in read_text(path, "image ids").splitlines() if line.strip()]
    if not ids:
        raise DatasetLayoutError(f"{path}: the split lists no image ids")
    return ids


class VOCSegmentation(Dataset):
    """Images with image-level labels, masks and (when present) part maps.

    Each item is a dict: ``image`` float (3, H, W) after ``transform``, ``label`` float (C,)
    multi-hot over foreground classes, ``mask`` long (H, W), ``parts`` long (H, W) (zeros when the
    dataset has no part maps), ``index`` int.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        class_names: Sequence[str] | None = None,
        transform: Callable[[dict], dict] | None = None,
        label_file: str | None = "cls_labels.npy",
    ) -> None:
        self.root = Path(root)
        if not (self.root / "JPEGImages").is_dir():
            raise DatasetLayoutError(f"{self.root}: no JPEGImages/ folder; {LAYOUT_HELP}")
        self.split = split
        self.ids = read_split(self.root, split)
        self.class_names = read_class_names(self.root, class_names)
        self.transform = transform
        self.has_parts = (self.root / "SegmentationPart").is_dir()
        self._labels = self._read_labels(label_file)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _read_labels(self, label_file: str | None) -> dict[str, np.ndarray] | None:
        if not label_file or not (self.root / label_file).is_file():
            return None
        path = self.root / label_file
        labels = load_label_file(path)  # a pickled dict, read without running code
        sample = next(iter(labels.values()))
        if len(sample) != self.num_classes:
            raise ValueError(
                f"{path}: labels have {len(sample)} classes but {self.num_classes} class names are "
                f"configured; fix the labels or the class names (classes.txt / dataset.class_names)"
            )
        return {str(k): np.asarray(v, np.float32) for k, v in labels.items()}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def source(self) -> Path:
        """The split file listing this dataset's images (named in the errors about them)."""
        return split_path(self.root, self.split)

    def preflight_items(self) -> list[Item]:
        """Each image's files, and its classes where the label file gives them (the preflight's input)."""
        items = []
        for i, image_id in enumerate(self.ids):
            given = self._labels.get(image_id) if self._labels is not None else None
            label = tuple(int(c) for c in np.flatnonzero(given)) if given is not None else None
            items.append(Item(image_id, self.image_path(i), self.mask_path(i), label))
        return items

    def drop(self, ids: set[str]) -> None:
        """Leave these images out (the preflight's unreadable ones, with ``dataset.bad_images=skip``)."""
        self.ids = [i for i in self.ids if i not in ids]

    def image_path(self, i: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[i]}.jpg"

    def mask_path(self, i: int) -> Path:
        return self.root / "SegmentationClass" / f"{self.ids[i]}.png"

    def read_mask(self, i: int) -> np.ndarray:
        path = self.mask_path(i)
        if not path.is_file():
            raise DatasetLayoutError(f"{path}: mask not found; {LAYOUT_HELP}")
        return read_mask(path)  # palette PNGs decode to their indices

    def label(self, i: int, mask: np.ndarray) -> np.ndarray:
        if self._labels is not None and self.ids[i] in self._labels:
            return self._labels[self.ids[i]]
        return labels_from_mask(mask, self.num_classes)

    @cached_property
    def images_of_class(self) -> list[list[int]]:
        """For each class, the indices of the images labelled with it (from the label file, else
        from the masks, each read once): what per-class image sampling draws from."""
        out: list[list[int]] = [[] for _ in self.class_names]
        for i in range(len(self)):
            listed = self._labels is not None and self.ids[i] in self._labels
            for c in np.flatnonzero(self.label(i, None if listed else self.read_mask(i))):
                out[c].append(i)
        return out

    def __getitem__(self, i: int) -> dict:
        path = self.image_path(i)
        if not path.is_file():
            raise DatasetLayoutError(f"{path}: image not found; {LAYOUT_HELP}")
        image = read_rgb(path)
        mask = self.read_mask(i)
        if mask.shape != image.shape[:2]:
            raise BadMask(f"{self.mask_path(i)}: mask {mask.shape} and image {image.shape[:2]} differ in size")
        parts = np.zeros_like(mask)
        if self.has_parts:
            part_path = self.root / "SegmentationPart" / f"{self.ids[i]}.png"
            if not part_path.is_file():
                raise DatasetLayoutError(f"{part_path}: part map not found (SegmentationPart/ holds one per image)")
            parts = read_mask(part_path)
        item = {
            "image": image,
            "mask": mask,
            "parts": parts,
            "label": self.label(i, mask),
            "index": i,
        }
        if self.transform is not None:
            item = self.transform(item)
        return to_tensors(item)


def read_rgb(path: Path) -> np.ndarray:
    """An image as RGB uint8 (H, W, 3): PIL's convert("RGB") (grey replicated, alpha dropped; see
    lpcam.data.checks.RGB_RULES). Whatever fails to decode is a :class:`BadImage` naming the file,
    also inside a DataLoader worker, where the preflight could not foresee it (a corrupt middle)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - whatever PIL raises, the file is the fault
        raise BadImage(f"{path}: unreadable image ({one_line(err)})") from err


def read_mask(path: Path) -> np.ndarray:
    """A class-id map (mask or part map) as decoded; a :class:`BadMask` naming the file if it does not decode."""
    try:
        with Image.open(path) as mask:
            return np.asarray(mask)
    except Exception as err:  # noqa: BLE001
        raise BadMask(f"{path}: unreadable mask ({one_line(err)})") from err


def to_tensors(item: dict) -> dict:
    """numpy HWC uint8 image → float CHW in [0, 1]; masks → long; labels → float."""
    out = dict(item)
    image = item["image"]
    if isinstance(image, np.ndarray):
        out["image"] = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 255
    for key in ("mask", "parts"):
        if isinstance(item[key], np.ndarray):
            out[key] = torch.from_numpy(np.array(item[key], copy=True)).long()
    out["label"] = torch.as_tensor(item["label"], dtype=torch.float32)
    return out
