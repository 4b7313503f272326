"""What every dataset the project generates itself shares: writing it once, in the VOC layout.

A generator is a dataclass of parameters (the shared ones below, and its own) with ``class_names`` and ``sample(rng, index) -> (image, class map, part map or None)``,
``index`` the image's number (the first ``num_train`` are training images, the rest validation). This base
writes it under a folder named by a fingerprint of the parameters, so datasets of different
parameters never overwrite each other, and reuses a folder only when its ``meta.json`` matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from lpcam.data.palette import save_palette_png
from lpcam.data.voc import labels_from_mask
from lpcam.errors import InputError


class GeneratorSettingError(InputError, ValueError):
    """An impossible ``dataset.generator.*`` value, refused before anything is generated."""


@dataclass
class DatasetGenerator:
    """Base of the generator dataclasses (see the module docstring): the parameters every
    generated dataset has, and the checks on them."""

    name = "generated"

    image_size: int = 96
    num_train: int = 2000
    num_eval: int = 300  # the first num_eval training images form the seed-evaluation split
    num_val: int = 300
    noise: float = 0.03
    seed: int = 0

    def __post_init__(self) -> None:
        whole = lambda v, least: isinstance(v, int) and not isinstance(v, bool) and v >= least  # noqa: E731
        for key, least in (("image_size", 32), ("num_train", 1), ("num_eval", 1), ("num_val", 0)):
            if not whole(getattr(self, key), least):
                raise GeneratorSettingError(f"dataset.generator.{key}={getattr(self, key)!r}: expected a whole number ≥ {least}")
        if self.num_eval > self.num_train:
            raise GeneratorSettingError(f"{self.name}: num_eval must not exceed num_train (the eval split is a subset)")

    @property
    def class_names(self) -> list[str]:  # pragma: no cover - every generator defines it
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        raise NotImplementedError  # pragma: no cover

    def matches(self, root: Path) -> bool:
        meta = Path(root) / "meta.json"
        return meta.is_file() and json.loads(meta.read_text()) == self._meta()

    def _meta(self) -> dict:
        return {"generator": type(self).__name__, **json.loads(json.dumps(asdict(self)))}

    def fingerprint(self) -> str:
        """8 hex digits naming these parameters: datasets of different parameters get different
        folders, so sweeps over them (or parallel jobs) never overwrite each other's data."""
        return hashlib.sha1(json.dumps(self._meta(), sort_keys=True).encode()).hexdigest()[:8]

    def write(self, root: str | Path, progress: bool = True) -> Path:
        """Generate the dataset under ``root`` unless it is already there with the same parameters.

        Written into a temporary sibling folder (named for this process) and renamed at the end, so
        an interrupted run never leaves a half-written dataset that a later run would trust, and
        two jobs generating the same dataset at once do not collide: the second rename finds the
        first's complete copy and drops its own.
        """
        root = Path(root)
        if self.matches(root):
            return root
        tmp = root.with_name(f"{root.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(self.seed)
        ids = [f"{i:06d}" for i in range(self.num_train + self.num_val)]
        labels: dict[str, np.ndarray] = {}
        for i, name in enumerate(tqdm(ids, desc=f"generating {self.name} in {root}", disable=not progress, leave=False)):
            image, seg, parts = self.sample(rng, i)
            Image.fromarray(image).save(tmp / "JPEGImages" / f"{name}.jpg", quality=95)
            save_palette_png(seg, tmp / "SegmentationClass" / f"{name}.png")
            if parts is not None:
                (tmp / "SegmentationPart").mkdir(exist_ok=True)
                Image.fromarray(parts).save(tmp / "SegmentationPart" / f"{name}.png")
            labels[name] = labels_from_mask(seg, len(self.class_names))
        splits = {"train_aug": ids[: self.num_train], "train": ids[: self.num_eval], "val": ids[self.num_train :]}
        for split, names in splits.items():
            (tmp / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        np.save(tmp / "cls_labels.npy", labels, allow_pickle=True)
        (tmp / "classes.txt").write_text("\n".join(self.class_names) + "\n")
        (tmp / "meta.json").write_text(json.dumps(self._meta(), indent=1))
        if self.matches(root):  # another job finished the same dataset meanwhile
            shutil.rmtree(tmp)
            return root
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        return root
