"""``digits``: a second offline benchmark, from real handwriting (scikit-learn's bundled digits).

Why a second one: ``synthetic_parts`` is drawn to show CAM's failure by construction. These are
strokes written by people (the UCI optical-recognition digits that ship inside scikit-learn, 1,797
images of 8×8 pixels), so part structure (loops, stems, bars) and its sharing between classes
(the loop of a 6, an 8 and a 9) come from the data, not from the generator.

Each canvas holds 1–``max_objects`` digits of distinct classes, upscaled to 28–40 px with bicubic
interpolation, in a random bright colour, over the same cluttered background as
``synthetic_parts``. The mask is drawn from the strokes: a pixel belongs to its digit where the
upscaled stroke intensity is above ``stroke_threshold``, and to 255 (ignored) on the soft rim
between ``rim_threshold`` and it, as VOC marks object boundaries. Training canvases draw from 80 %
of the handwritten samples of each class, validation canvases from the other 20 %. There is no
part map, so results have no part recall.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image

from lpcam.data.generated import DatasetGenerator, GeneratorSettingError
from lpcam.data.synthetic import cluttered_background

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass
class HandwrittenDigits(DatasetGenerator):
    """Parameters of the digits benchmark; ``write(root)`` materialises it in the VOC layout."""

    name = "digits"

    digit_size: tuple[int, int] = (28, 40)
    max_objects: int = 3
    clutter: tuple[int, int] = (2, 5)
    stroke_threshold: float = 0.45
    rim_threshold: float = 0.2
    version: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.digit_size, self.clutter = tuple(self.digit_size), tuple(self.clutter)  # Hydra passes lists
        if not 1 <= self.max_objects <= 10:
            raise GeneratorSettingError(f"digits: max_objects must be in 1..10, got {self.max_objects}")
        if self.digit_size[1] > self.image_size:
            raise GeneratorSettingError(f"digits: digit_size {self.digit_size} does not fit image_size {self.image_size}")

    @property
    def class_names(self) -> list[str]:
        return list(DIGIT_NAMES)

    @cached_property
    def _sources(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per class, the (n, 8, 8) handwritten samples in [0, 1] for training and for validation."""
        from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

        digits = load_digits()
        train, val = [], []
        for c in range(10):
            samples = digits.images[digits.target == c] / 16.0
            cut = int(0.8 * len(samples))
            train.append(samples[:cut])
            val.append(samples[cut:])
        return train, val

    def sample(self, rng: np.random.Generator, index: int = 0) -> tuple[np.ndarray, np.ndarray, None]:
        """Canvas number ``index``: (H, W, 3) uint8 and its class map (0 background, 1..10, 255 rim)."""
        sources = self._sources[1 if index >= self.num_train else 0]
        s = self.image_size
        image, xx, yy = cluttered_background(rng, s, self.clutter)
        seg = np.zeros((s, s), np.uint8)
        n_obj = int(rng.integers(1, self.max_objects + 1))
        for c in rng.choice(10, size=n_obj, replace=False):
            glyph = sources[c][rng.integers(len(sources[c]))]
            size = int(rng.integers(self.digit_size[0], self.digit_size[1] + 1))
            stroke = np.asarray(Image.fromarray(glyph.astype(np.float32)).resize((size, size), Image.BICUBIC)).clip(0, 1)
            for _ in range(20):  # rejection sampling against overlapping digits
                y, x = rng.integers(0, s - size + 1, size=2)
                if (seg[y : y + size, x : x + size][stroke > self.rim_threshold] == 0).mean() > 0.9:
                    break
            colour = rng.uniform(0.55, 1.0, size=3) * (rng.permutation(3) > 0) + rng.uniform(0, 0.25, size=3)
            alpha = np.clip(stroke * 1.6, 0, 1)[..., None]
            patch = image[y : y + size, x : x + size]
            image[y : y + size, x : x + size] = patch * (1 - alpha) + np.clip(colour, 0, 1) * alpha
            region = seg[y : y + size, x : x + size]
            region[(stroke > self.rim_threshold) & (region == 0)] = 255
            region[stroke > self.stroke_threshold] = c + 1
        image = image + rng.normal(0, self.noise, image.shape).astype(np.float32)
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), seg, None
