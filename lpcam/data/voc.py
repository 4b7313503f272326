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

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lpcam.errors import InputError
from lpcam.safe_load import load_label_file

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

LAYOUT_HELP = (
    "expected the PASCAL VOC layout: JPEGImages/<id>.jpg, SegmentationClass/<id>.png, "
    "ImageSets/Segmentation/<split>.txt (and optionally classes.txt, cls_labels.npy)"
)


class DatasetLayoutError(InputError, FileNotFoundError):
    """Raised with the path that is missing and the layout that was expected."""


def read_class_names(root: str | Path, class_names: Sequence[str] | None = None) -> list[str]:
    """Foreground class names: given explicitly, else ``classes.txt`` in the root, else VOC's 20."""
    if class_names:
        return list(class_names)
    path = Path(root) / "classes.txt"
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if names and names[0] == "background":
            names = names[1:]
        return names
    return list(VOC_CLASSES)


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Multi-hot image label over the foreground classes present in a class-id mask (0 background,
    255 ignore): what a dataset without a label file means by its image-level labels."""
    present = np.unique(mask)
    present = present[(present > 0) & (present <= num_classes)]
    onehot = np.zeros(num_classes, np.float32)
    onehot[present - 1] = 1
    return onehot


def read_split(root: str | Path, split: str) -> list[str]:
    path = Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: split file not found; {LAYOUT_HELP}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
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

    def image_path(self, i: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[i]}.jpg"

    def read_mask(self, i: int) -> np.ndarray:
        path = self.root / "SegmentationClass" / f"{self.ids[i]}.png"
        if not path.is_file():
            raise DatasetLayoutError(f"{path}: mask not found; {LAYOUT_HELP}")
        return np.asarray(Image.open(path))  # palette PNGs decode to their indices

    def label(self, i: int, mask: np.ndarray) -> np.ndarray:
        if self._labels is not None and self.ids[i] in self._labels:
            return self._labels[self.ids[i]]
        return labels_from_mask(mask, self.num_classes)

    def __getitem__(self, i: int) -> dict:
        path = self.image_path(i)
        if not path.is_file():
            raise DatasetLayoutError(f"{path}: image not found; {LAYOUT_HELP}")
        image = np.asarray(Image.open(path).convert("RGB"))
        mask = self.read_mask(i)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{self.ids[i]}: mask {mask.shape} and image {image.shape[:2]} differ in size")
        parts = np.zeros_like(mask)
        if self.has_parts:
            parts = np.asarray(Image.open(self.root / "SegmentationPart" / f"{self.ids[i]}.png"))
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
