"""Small folders in the real datasets' layouts, written by the tests (the real data cannot be
downloaded here): images of varied sizes with objects drawn in class colours, masks with VOC's
255 boundary, the split files the real datasets ship."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lpcam.data.palette import save_palette_png


def _draw_objects(rng: np.random.Generator, h: int, w: int, classes: list[int], colours: np.ndarray):
    """An image with one filled box per class (class colour plus noise) and its mask (0, c+1, 255 rim)."""
    image = rng.uniform(0.2, 0.5, size=(h, w, 3))
    mask = np.zeros((h, w), np.uint8)
    for c in classes:
        bh, bw = rng.integers(h // 4, h // 2), rng.integers(w // 4, w // 2)
        y, x = rng.integers(1, h - bh - 1), rng.integers(1, w - bw - 1)
        image[y : y + bh, x : x + bw] = colours[c]
        mask[y - 1 : y + bh + 1, x - 1 : x + bw + 1] = 255  # VOC marks boundaries as ignore
        mask[y : y + bh, x : x + bw] = c + 1
    image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
    return (image * 255).astype(np.uint8), mask


def make_voc_fixture(root: Path, num_images: int = 24, num_classes: int = 20, seed: int = 0) -> Path:
    """VOC2012 as the README describes it (SBD masks merged, IRN's train_aug.txt), no label file:
    labels are derived from the masks. Every class appears in ``train_aug``."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0, 1, size=(num_classes, 3))
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"2007_{i:06d}" for i in range(num_images)]
    for i, name in enumerate(ids):
        h, w = int(rng.integers(56, 80)), int(rng.integers(56, 80))  # VOC images differ in size
        classes = [i % num_classes] + ([int(rng.integers(num_classes))] if rng.random() < 0.3 else [])
        image, mask = _draw_objects(rng, h, w, sorted(set(classes)), colours)
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg")
        save_palette_png(mask, root / "SegmentationClass" / f"{name}.png")
    splits = {"train_aug": ids, "train": ids[: num_images // 3], "val": ids[-num_images // 3 :]}
    for split, names in splits.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root
