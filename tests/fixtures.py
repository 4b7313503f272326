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
    """VOC2012 as the datasets page describes it (SBD masks merged, IRN's train_aug.txt), no label file:
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


COCO_CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]  # ids as sparse as COCO's


def make_coco_fixture(root: Path, num_images: int = 30, seed: int = 0) -> Path:
    """COCO 2014 as distributed: <split>/COCO_<split>_<id>.jpg and annotations/instances_<split>.json
    with polygon instances (category ids not contiguous), one crowd region per split, and one image
    without annotations (which WSSS leaves out)."""
    import json

    rng = np.random.default_rng(seed)
    colours = rng.uniform(0, 1, size=(len(COCO_CATEGORIES), 3))
    (root / "annotations").mkdir(parents=True)
    for split, offset in (("train2014", 0), ("val2014", 10_000)):
        (root / split).mkdir()
        images, annotations = [], []
        n = num_images if split == "train2014" else num_images // 3
        for i in range(n + 1):
            image_id = offset + i + 1
            h, w = int(rng.integers(56, 80)), int(rng.integers(56, 80))
            classes = [] if i == n else sorted({i % 3, int(rng.integers(3))})
            image, mask = _draw_objects(rng, h, w, classes, colours)
            name = f"COCO_{split}_{image_id:012d}.jpg"
            Image.fromarray(image).save(root / split / name)
            images.append({"id": image_id, "file_name": name, "height": h, "width": w})
            for c in classes:
                ys, xs = np.nonzero(mask == c + 1)
                x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": COCO_CATEGORIES[c]["id"],
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "area": float((x1 - x0) * (y1 - y0)),
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0,
                })  # fmt: skip
            if i == 0:  # a crowd region in the corner: ignored in the mask, not a label
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": 18,
                    "segmentation": [[0, 0, 6, 0, 6, 6, 0, 6]], "area": 36.0, "bbox": [0, 0, 6, 6], "iscrowd": 1,
                })  # fmt: skip
        data = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root
