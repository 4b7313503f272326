"""Training augmentation on numpy items (image, mask, parts together), IRN-style.

Images stay in [0, 1] RGB through the data pipeline; the backbone applies its own normalisation,
so CAM code and figures see the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.utils.data
from PIL import Image


@dataclass
class TrainTransform:
    """Random long-side resize, horizontal flip and a random crop (padded with ignore).

    ``resize_long=(320, 640)`` and ``crop=512`` are the paper's VOC recipe; the embedded benchmark
    uses a light version. The label stays the image's label: a crop may cut an object out, as in
    IRN's training.
    """

    resize_long: tuple[int, int] | None = None
    crop: int | None = None
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._worker_seed: int | None = None

    @property
    def rng(self) -> np.random.Generator:
        """The main process draws from ``seed``. A DataLoader worker holds a copy of that state, so
        each worker reseeds from its own torch seed (distinct per worker and per epoch); otherwise
        all workers, every epoch, would repeat the same augmentations."""
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self._worker_seed = info.seed
            self._rng = np.random.default_rng(info.seed % 2**32)
        return self._rng

    def get_state(self) -> dict:
        """The main process's generator state: a training checkpoint saves it, so that a resumed
        training draws the augmentations the uninterrupted one drew (see lpcam.stages.resume)."""
        return self._rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    def __call__(self, item: dict) -> dict:
        image, mask, parts = item["image"], item["mask"], item["parts"]
        if self.resize_long is not None:
            long_side = int(self.rng.integers(self.resize_long[0], self.resize_long[1] + 1))
            h, w = mask.shape
            scale = long_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
            parts = np.asarray(Image.fromarray(parts).resize(size, Image.NEAREST))
        if self.flip and self.rng.random() < 0.5:
            image, mask, parts = image[:, ::-1], mask[:, ::-1], parts[:, ::-1]
        if self.crop is not None:
            image, mask, parts = random_crop(self.rng, self.crop, image, mask, parts)
        return {**item, "image": image, "mask": mask, "parts": parts}


def random_crop(rng: np.random.Generator, size: int, image: np.ndarray, mask: np.ndarray, parts: np.ndarray):
    """A size×size crop; smaller inputs are padded (image 0, mask 255, parts 0) at a random offset."""
    h, w = mask.shape
    ph, pw = max(size, h), max(size, w)
    oy, ox = int(rng.integers(0, ph - h + 1)), int(rng.integers(0, pw - w + 1))
    big_img = np.zeros((ph, pw, 3), image.dtype)
    big_mask = np.full((ph, pw), 255, mask.dtype)
    big_parts = np.zeros((ph, pw), parts.dtype)
    big_img[oy : oy + h, ox : ox + w] = image
    big_mask[oy : oy + h, ox : ox + w] = mask
    big_parts[oy : oy + h, ox : ox + w] = parts
    y, x = int(rng.integers(0, ph - size + 1)), int(rng.integers(0, pw - size + 1))
    sl = (slice(y, y + size), slice(x, x + size))
    return big_img[sl], big_mask[sl], big_parts[sl]
