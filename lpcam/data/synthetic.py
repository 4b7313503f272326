"""The embedded benchmark: ``synthetic_parts``, generated on disk in the PASCAL VOC layout.

Why it exists: model weights and VOC cannot be downloaded here, yet the method has to be measured
on data that shows the problem LPCAM addresses. Each object is a *small class-specific head* (the
discriminative part) on a *larger body whose texture is shared by a group of classes* (the
non-discriminative part). A multi-label classifier separates the classes by their heads, so its
classic CAM lights the head and under-covers the body, as CAM does with a sheep's head and legs.

Design (all seeded, numpy only, a few seconds for thousands of images):

- Classes come in groups of ``group_size``; a group shares one body texture (oriented stripes, dots
  or a checker in the group's colours). ``body_tint`` adds a weak class-specific colour shift on
  the body (sheep legs and cow legs are both legs, but not identical); 0 makes bodies identical
  within a group.
- The *control* variant (``shared_bodies=False``) gives every class its own body texture, so the
  body is as discriminative as the head and CAM is expected to cover it: LPCAM should not help.
- 1–``max_objects`` objects per image at random position and orientation, on a cluttered
  background of random textured blobs over low-frequency noise.
- Besides the VOC folders, ``SegmentationPart/`` holds a per-pixel part map (0 none,
  1 discriminative head, 2 shared body) used for part recall, and ``meta.json`` the parameters,
  so an existing folder is reused only when it was generated with the same ones.

The receptive field of the default backbone (~37 px theoretical) is small against the body
(~35–50 px long), which the feasibility study found necessary: with a receptive field as large as
the object every body position "sees" the head and CAM covers the body anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lpcam.data.generated import DatasetGenerator, GeneratorSettingError

GENERATOR_VERSION = 1

CLASS_NAMES = ("fox", "wolf", "owl", "hawk", "carp", "trout", "newt", "gecko")

# Head of each class: (pattern, colour a, colour b, period px). Distinct within every group.
_HEADS = (
    ("checker", (0.95, 0.55, 0.05), (0.25, 0.10, 0.00), 4),
    ("dots", (0.95, 0.95, 0.95), (0.55, 0.05, 0.05), 5),
    ("stripes", (0.95, 0.90, 0.10), (0.05, 0.05, 0.30), 4),
    ("checker", (0.10, 0.80, 0.95), (0.05, 0.20, 0.10), 3),
    ("dots", (0.95, 0.20, 0.60), (0.10, 0.30, 0.05), 4),
    ("stripes", (0.20, 0.95, 0.30), (0.45, 0.00, 0.45), 3),
    ("checker", (0.60, 0.30, 0.95), (0.95, 0.85, 0.60), 5),
    ("dots", (0.05, 0.05, 0.05), (0.95, 0.75, 0.30), 3),
)

# Body textures: (pattern, colour a, colour b, period px, angle rad). The first four are the group
# textures of the shared variant; the control variant uses one per class.
_BODIES = (
    ("stripes", (0.62, 0.48, 0.34), (0.30, 0.22, 0.15), 6, 0.0),
    ("stripes", (0.55, 0.60, 0.68), (0.22, 0.25, 0.32), 5, math.pi / 2),
    ("dots", (0.38, 0.55, 0.42), (0.15, 0.28, 0.20), 6, 0.0),
    ("checker", (0.70, 0.66, 0.50), (0.40, 0.36, 0.25), 7, math.pi / 4),
    ("stripes", (0.75, 0.35, 0.35), (0.35, 0.10, 0.10), 4, math.pi / 4),
    ("dots", (0.30, 0.40, 0.75), (0.10, 0.12, 0.30), 4, 0.0),
    ("checker", (0.65, 0.45, 0.70), (0.30, 0.18, 0.35), 4, 0.0),
    ("stripes", (0.45, 0.70, 0.70), (0.12, 0.30, 0.30), 7, -math.pi / 4),
)


@dataclass
class SyntheticParts(DatasetGenerator):
    """Parameters of the generated benchmark; ``write(root)`` materialises it in the VOC layout."""

    name = "synthetic_parts"

    num_classes: int = 6
    group_size: int = 2
    shared_bodies: bool = True
    body_tint: float = 0.0
    num_eval: int = 500
    max_objects: int = 2
    clutter: tuple[int, int] = (3, 6)
    version: int = field(default=GENERATOR_VERSION, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.clutter = tuple(self.clutter)  # Hydra passes ListConfig
        if not 1 <= self.num_classes <= len(CLASS_NAMES):
            raise GeneratorSettingError(f"synthetic_parts: num_classes must be in 1..{len(CLASS_NAMES)}, got {self.num_classes}")
        if self.group_size < 1 or self.num_classes % self.group_size:
            raise GeneratorSettingError(
                f"synthetic_parts: group_size={self.group_size} must divide num_classes={self.num_classes}"
            )

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES[: self.num_classes])

    def body_of(self, c: int) -> int:
        """Index into _BODIES of the body texture of class ``c`` (0-based foreground index)."""
        return c // self.group_size if self.shared_bodies else c

    # -- drawing ---------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image (H, W, 3) uint8, its class map (0 bg, 1..C) and part map (0, 1 head, 2 body)."""
        s = self.image_size
        image, xx, yy = cluttered_background(rng, s, self.clutter)
        seg = np.zeros((s, s), np.uint8)
        parts = np.zeros((s, s), np.uint8)
        n_obj = int(rng.integers(1, self.max_objects + 1))
        classes = rng.choice(self.num_classes, size=n_obj, replace=False)
        for c in classes:
            for _ in range(20):  # rejection sampling against heavy overlap
                body, head, frame = self._place(rng, xx, yy)
                mask = body | head
                if (mask & (seg > 0)).sum() <= 0.1 * mask.sum():
                    break
            u, v = frame
            pattern, a, b, period, angle = _BODIES[self.body_of(int(c))]
            a, b = np.array(a), np.array(b)
            if self.shared_bodies and self.body_tint:
                tint = self.body_tint * _tint_direction(int(c) % self.group_size, self.group_size)
                a, b = np.clip(a + tint, 0, 1), np.clip(b + tint, 0, 1)
            image[body] = _texture(pattern, u[body], v[body], a, b, period, angle)
            hp, ha, hb, hper = _HEADS[int(c)]
            image[head] = _texture(hp, u[head], v[head], np.array(ha), np.array(hb), hper, 0.0)
            seg[mask] = c + 1
            parts[body] = 2
            parts[head] = 1
        image = image + rng.normal(0, self.noise, image.shape).astype(np.float32)
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), seg, parts

    def _place(self, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray):
        """Random body ellipse with a head disc at one end; returns masks and the object frame."""
        s = self.image_size
        k = s / 96  # sizes are designed for 96 px and scale with the image
        a, b = rng.uniform(17, 24) * k, rng.uniform(10, 14) * k
        r = rng.uniform(6, 8) * k
        theta = rng.uniform(0, 2 * math.pi)
        margin = a + r
        cx, cy = rng.uniform(margin * 0.6, s - margin * 0.6, size=2)
        dx, dy = math.cos(theta), math.sin(theta)
        u = (xx - cx) * dx + (yy - cy) * dy  # along the body axis, towards the head
        v = -(xx - cx) * dy + (yy - cy) * dx
        body = (u / a) ** 2 + (v / b) ** 2 <= 1
        hu = a + 0.5 * r
        head = (u - hu) ** 2 + v**2 <= r**2
        return body & ~head, head, (u, v)


def _tint_direction(i: int, n: int) -> np.ndarray:
    """A colour offset of unit length, evenly spread over the classes of a group."""
    phi = 2 * math.pi * i / max(n, 1)
    return np.array([math.cos(phi), math.sin(phi), -math.cos(phi) - math.sin(phi)]) / 1.5


def _texture(pattern: str, u, v, a, b, period: float, angle: float) -> np.ndarray:
    """Colour a set of pixels (given their object-frame coordinates) with a two-colour pattern."""
    ru = u * math.cos(angle) + v * math.sin(angle)
    rv = -u * math.sin(angle) + v * math.cos(angle)
    if pattern == "stripes":
        on = np.sin(2 * math.pi * ru / period) > 0
    elif pattern == "checker":
        on = (np.floor(ru / period) + np.floor(rv / period)) % 2 == 0
    elif pattern == "dots":
        on = ((ru % period - period / 2) ** 2 + (rv % period - period / 2) ** 2) < (period / 3) ** 2
    else:  # pragma: no cover - the tables above name only these
        raise ValueError(pattern)
    return np.where(on[:, None], a[None], b[None]).astype(np.float32)


def cluttered_background(
    rng: np.random.Generator, s: int, clutter: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An (s, s, 3) float image of coloured noise with ``clutter[0]``–``clutter[1]`` textured
    shapes on it, and the pixel grid (xx, yy) the objects are then drawn with. Shared by the
    synthetic and the digits generators; the order of the draws is part of each benchmark, so a
    change to it changes every image a seed gives."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    image = noise_background(rng, s)
    for _ in range(rng.integers(clutter[0], clutter[1] + 1)):
        draw_clutter(rng, image, xx, yy)
    return image, xx, yy


def noise_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Low-frequency coloured noise: a 6×6 random grid upsampled bilinearly."""
    coarse = rng.uniform(0.15, 0.65, size=(6, 6, 3)).astype(np.float32)
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((s, s), Image.BILINEAR)
    return np.asarray(img, np.float32) / 255


def draw_clutter(rng: np.random.Generator, image: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> None:
    """A random textured ellipse or rectangle: background that is not plain, as in real photos."""
    s = image.shape[0]
    cx, cy = rng.uniform(0, s, size=2)
    a, b = rng.uniform(5, 16, size=2) * s / 96
    theta = rng.uniform(0, math.pi)
    u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
    v = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
    mask = (u / a) ** 2 + (v / b) ** 2 <= 1 if rng.random() < 0.5 else (abs(u) <= a) & (abs(v) <= b)
    pattern = ("stripes", "checker", "dots", "plain")[rng.integers(4)]
    ca, cb = rng.uniform(0, 1, size=(2, 3))
    if pattern == "plain":
        image[mask] = ca
    else:
        image[mask] = _texture(pattern, u[mask], v[mask], ca, cb, rng.uniform(3, 8), rng.uniform(0, math.pi))
