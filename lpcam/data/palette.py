"""The PASCAL VOC colour palette, so our masks open in every WSSS tool as VOC masks do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def voc_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 palette of VOC: class i gets the bit-interleaved colour of its index."""
    palette = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def save_palette_png(mask: np.ndarray, path: str | Path) -> None:
    """Write a class-id mask (0..N, 255 ignore) as a palette PNG, the format of VOC's masks.

    The format is named, not guessed from the suffix, so that the temporary names of
    ``atomic_write`` (``x.png.partial-<pid>``) can be written to as well.
    """
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().reshape(-1).tolist())
    img.save(path, format="PNG")
