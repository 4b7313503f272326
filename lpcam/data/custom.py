"""Any dataset in the VOC layout by one override: ``dataset=custom dataset.root=PATH``.

:class:`CustomDataModule` is a :class:`SegmentationDataModule` whose settings default to ``"auto"``
and are chosen from what the folder holds when it is constructed:

- **splits**: training and prototypes on ``train_aug`` if its split file exists, else ``train``;
  checkpoint selection on ``val`` if it exists, else none (the last epoch's checkpoint is kept);
  seed evaluation on ``train`` (as VOC) if it exists, else the training split.
- **classes**: ``classes.txt`` if present; else ``class1``...``classN`` (``classK`` is mask value
  K), N the length of ``cls_labels.npy``'s label vectors, or else the largest label in the masks
  of the splits in use (255, the ignore label, excluded).
- **recipe**, from the sizes of up to :data:`SIZE_SAMPLE` images spread over the splits in use:
  images whose (median) long side is under :data:`SMALL_IMAGE` px are "small", like the embedded
  benchmark's 96 px: no resize, no crop (a padded crop to the largest sampled side when sizes
  differ, so that batches stack), batch 32, evaluation batch 50, no workers. Larger images get
  the VOC recipe: long side resized to 320-640, 512 crops, batch 16, 4 workers, evaluation batch 1
  when sizes differ (else 8).
- **name**: the folder's name, through the ``lpcam.folder_name`` resolver (``lpcam/data/__init__.py``)
  in ``conf/dataset/custom.yaml``: resolved at config time, since Hydra's run directory is
  ``outputs/${dataset.name}/...``, and without reading the folder, so that a wrong root is
  reported by the datamodule in one line rather than by Hydra while it names the run directory
  (hence ``root: null`` rather than ``???``: a missing root is one line too).

Any setting given explicitly (``dataset.batch_size=8``, ``dataset.train_transform.crop=64``, ...)
wins over the automatic choice. The choices are logged in one INFO line.

Every automatic choice is a deterministic function of the folder's contents (never of the
machine: ``num_workers`` does not follow the CPU count, since workers change the augmentations'
random streams). The classifier cache (``lpcam/cache.py``) hashes the config, where these settings
read ``auto``, together with ``root``; so, as for every dataset, the key identifies the folder, not
its contents: same folder contents, same choices, same classifier. A folder changed in place
(a ``train_aug.txt`` added, say) needs ``cache.classifier=false`` or a new cache, as editing
VOC's split files would.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lpcam.data import folder_name
from lpcam.data.checks import BadImage, inspect_image, inspect_mask
from lpcam.data.datamodule import SegmentationDataModule
from lpcam.data.settings import check_settings
from lpcam.data.transforms import TrainTransform
from lpcam.data.voc import LAYOUT_HELP, DatasetLayoutError, read_class_names, read_split
from lpcam.errors import InputError
from lpcam.safe_load import load_label_file

log = logging.getLogger(__name__)

AUTO = "auto"
SIZE_SAMPLE = 32  # training images whose sizes are read (headers only)
SMALL_IMAGE = 256  # px: a median long side below this is "small": no resize, no crop
SMALL_RECIPE = {"resize_long": None, "crop": None, "batch_size": 32, "eval_batch_size": 50, "num_workers": 0}
VOC_RECIPE = {"resize_long": [320, 640], "crop": 512, "batch_size": 16, "eval_batch_size": 8, "num_workers": 4}


def split_dir(root: Path) -> Path:
    return root / "ImageSets" / "Segmentation"


def found_splits(root: Path) -> list[str]:
    """The split files under ``ImageSets/Segmentation/``; an error naming the path when there are none."""
    if not (root / "JPEGImages").is_dir():
        raise DatasetLayoutError(f"{root}: no JPEGImages/ folder; {LAYOUT_HELP}")
    splits = sorted(p.stem for p in split_dir(root).glob("*.txt")) if split_dir(root).is_dir() else []
    if not splits:
        raise DatasetLayoutError(f"{split_dir(root)}: no split file (train.txt, train_aug.txt, val.txt); {LAYOUT_HELP}")
    return splits


def choose_splits(root: Path, found: Sequence[str]) -> dict[str, str]:
    """train_aug else train for training; val (else none) for checkpoint selection;
    train else the training split for seed evaluation."""
    train = next((s for s in ("train_aug", "train") if s in found), None)
    if train is None:
        raise DatasetLayoutError(
            f"{split_dir(root)}: no train_aug.txt or train.txt (found {', '.join(f'{s}.txt' for s in found)}); "
            f"name the training split with dataset.train_split=...; {LAYOUT_HELP}"
        )
    evaluation = "train" if "train" in found else train
    return {"train_split": train, "val_split": "val" if "val" in found else None, "eval_split": evaluation}


def sample_ids(ids: Sequence[str], n: int = SIZE_SAMPLE) -> list[str]:
    """Up to ``n`` ids spread evenly over the split (deterministic)."""
    if len(ids) <= n:
        return list(ids)
    return [ids[round(i * (len(ids) - 1) / (n - 1))] for i in range(n)]


def image_sizes(root: Path, ids: Sequence[str]) -> list[tuple[int, int]]:
    """(height, width) of each readable image, from its header. A missing or unreadable one is
    passed over (the preflight reports it, or leaves it out, naming its split file) unless none is
    readable."""
    sizes, bad = [], None
    for image_id in ids:
        try:
            width, height, _ = inspect_image(root / "JPEGImages" / f"{image_id}.jpg")
        except (BadImage, DatasetLayoutError) as err:
            bad = bad or err
            continue
        sizes.append((height, width))
    if not sizes and bad is not None:
        raise bad
    return sizes


def choose_recipe(sizes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Transform, batch sizes and workers from a sample of image sizes (see the module docstring)."""
    long_side = statistics.median(max(s) for s in sizes)
    same = len(set(sizes)) == 1
    if long_side < SMALL_IMAGE:
        recipe = dict(SMALL_RECIPE)
        if not same:  # pad (and crop) to one size so that training batches stack
            recipe["crop"] = max(max(s) for s in sizes)
    else:
        recipe = dict(VOC_RECIPE)
    if not same:
        recipe["eval_batch_size"] = 1
    return recipe


def largest_mask_label(root: Path, ids: Sequence[str]) -> tuple[int, Path | None]:
    """The largest class id in the masks of ``ids``, 255 (ignore) excluded, and a mask holding it.
    A missing mask is passed over: the preflight reports it, naming its split file."""
    largest, where = 0, None
    for image_id in ids:
        path = root / "SegmentationClass" / f"{image_id}.png"
        if not path.is_file():
            continue
        _, _, values = inspect_mask(path)
        values = [v for v in values if v != 255]
        if values and max(values) > largest:
            largest, where = max(values), path
    return largest, where


def label_file_classes(path: Path) -> int:
    labels = load_label_file(path)
    return len(next(iter(labels.values())))


def generic_names(n: int) -> list[str]:
    return [f"class{k}" for k in range(1, n + 1)]


def _sizes_text(sizes: Sequence[tuple[int, int]]) -> str:
    if len(set(sizes)) == 1:
        return f"all {sizes[0][1]}x{sizes[0][0]} px"
    longs = [max(s) for s in sizes]
    return f"long side {min(longs)}-{max(longs)} px, sizes differ"


class CustomDataModule(SegmentationDataModule):
    """A VOC-layout folder whose splits, classes, transform and batch sizes default to ``"auto"``:
    chosen from the folder at construction (module docstring), each overridable by giving it.

    ``val_split=None`` (given) turns checkpoint selection off; ``train_transform=None`` turns
    augmentation off; a given ``TrainTransform`` keeps its ``resize_long``/``crop`` unless they
    are ``"auto"``.
    """

    def __init__(
        self,
        root: str | None,
        name: str | None = None,
        class_names: Sequence[str] | str | None = AUTO,
        train_split: str = AUTO,
        val_split: str | None = AUTO,
        eval_split: str = AUTO,
        batch_size: int | str = AUTO,
        eval_batch_size: int | str = AUTO,
        num_workers: int | str = AUTO,
        train_transform: TrainTransform | str | None = AUTO,
        prototype_split: str | None = None,
        images_per_class: int | None = None,
        seed: int = 0,
        bad_images: str = "error",
    ) -> None:
        if not root:
            raise InputError(f"dataset.root is not set: give the dataset's folder (dataset=custom dataset.root=PATH); {LAYOUT_HELP}")
        given = {
            "train_split": train_split, "val_split": val_split, "eval_split": eval_split,
            "batch_size": batch_size, "eval_batch_size": eval_batch_size, "num_workers": num_workers,
        }  # fmt: skip
        # the given values are refused before the folder is read; the automatic ones are checked once chosen
        check_settings({k: v for k, v in {**given, "bad_images": bad_images}.items() if v != AUTO})
        path = Path(root).expanduser()
        found = found_splits(path)
        chosen: dict[str, Any] = {}  # the automatic choices, for the log line
        notes: list[str] = [f"splits {', '.join(found)}"]

        auto_splits = [k for k in ("train_split", "val_split", "eval_split") if given[k] == AUTO]
        if auto_splits:
            splits = choose_splits(path, found)
            for key in auto_splits:
                given[key] = chosen[key] = splits[key]
            if "val_split" in auto_splits and "val" not in found:
                notes.append("no val.txt: no checkpoint selection, the last epoch is kept")
        train_ids = read_split(path, given["train_split"])
        used_ids = list(dict.fromkeys(
            i for split in (given["train_split"], given["val_split"], given["eval_split"]) if split for i in read_split(path, split)
        ))  # fmt: skip

        if train_transform == AUTO:
            train_transform = TrainTransform(resize_long=AUTO, crop=AUTO, flip=True)  # type: ignore[arg-type]
        recipe_keys = [k for k in ("batch_size", "eval_batch_size", "num_workers") if given[k] == AUTO]
        transform_keys = [k for k in ("resize_long", "crop") if train_transform is not None and getattr(train_transform, k) == AUTO]
        if recipe_keys or transform_keys:
            sizes = image_sizes(path, sample_ids(used_ids))
            notes.append(f"{len(train_ids)} {given['train_split']} images; {len(sizes)} of the splits' images sampled: {_sizes_text(sizes)}")
            recipe = choose_recipe(sizes)
            for key in recipe_keys:
                given[key] = chosen[key] = recipe[key]
            for key in transform_keys:
                setattr(train_transform, key, recipe[key])
                chosen[f"train_transform.{key}"] = recipe[key]

        classes_from = None  # where automatic class names came from, for the errors about a class
        if class_names is None or class_names == AUTO:  # None too: VOC's 20 names are never meant here
            class_names, source, classes_from = auto_class_names(path, used_ids)
            notes.append(source)
            chosen["class_names"] = _names_text(class_names)

        super().__init__(
            str(path),
            name=name or folder_name(path),
            class_names=class_names,
            train_transform=train_transform,
            prototype_split=prototype_split,
            images_per_class=images_per_class,
            seed=seed,
            bad_images=bad_images,
            **given,
        )
        self.auto_choices = chosen
        self._classes_from = classes_from
        settings = {
            **given, "class_names": _names_text(self.class_names),
            "train_transform.resize_long": getattr(train_transform, "resize_long", None),
            "train_transform.crop": getattr(train_transform, "crop", None),
        }  # fmt: skip
        explicit = {k: v for k, v in settings.items() if k not in chosen}
        log.info(
            "dataset %s at %s: found %s; chose %s%s",
            self.name, path, "; ".join(notes),
            ", ".join(f"{k}={v}" for k, v in chosen.items()) or "nothing (all given)",
            f"; given: {', '.join(f'{k}={v}' for k, v in explicit.items())}" if explicit else "",
        )  # fmt: skip

    @property
    def classes_source(self) -> str:
        return self._classes_from or super().classes_source


def auto_class_names(root: Path, ids: Sequence[str]) -> tuple[list[str], str, str]:
    """classes.txt, else ``classK`` names for the label file's length or the largest label in the
    masks of ``ids``; where they came from, for the log line and for the errors about a class."""
    if (root / "classes.txt").is_file():
        names = read_class_names(root)
        return names, f"{len(names)} classes in classes.txt", str(root / "classes.txt")
    if (root / "cls_labels.npy").is_file():
        n = label_file_classes(root / "cls_labels.npy")
        return generic_names(n), f"no classes.txt: {n} classes from cls_labels.npy", f"{root / 'cls_labels.npy'} (its labels' length)"
    n, where = largest_mask_label(root, ids)
    if n == 0:
        raise DatasetLayoutError(f"{root / 'SegmentationClass'}: the masks hold no class (only 0 and 255); {LAYOUT_HELP}")
    return (
        generic_names(n),
        f"no classes.txt: {n} classes from the masks' largest label (in {where})",
        f"the class count, which is the largest mask value, {n}, in {where}: a stray value? (or give classes.txt)",
    )


def _names_text(names: Sequence[str]) -> str:
    if len(names) > 4 and names == generic_names(len(names)):
        return f"[class1..class{len(names)}]"
    return "[" + ",".join(names) + "]"
