"""Multi-scale, flipped feature extraction shared by every CAM method (IRN's test-time protocol)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_SCALES = (1.0, 0.5, 1.5, 2.0)


def multiscale_features(
    extract: Callable[[Tensor], Tensor], images: Tensor, scales: Sequence[float] = DEFAULT_SCALES, flip: bool = True
) -> list[Tensor]:
    """For each scale, the features of the rescaled batch and of its mirror image, the mirror's
    flipped back so both views align: a list of (V, B, D, h, w) tensors, V = 2 with ``flip``.

    One forward pass per scale over the batch and its flip together: batched, never per image.
    """
    out = []
    h, w = images.shape[-2:]
    for s in scales:
        x = images if s == 1 else F.interpolate(images, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        feats = extract(x)
        if flip:
            a, b = feats.chunk(2)
            feats = torch.stack([a, b.flip(-1)])
        else:
            feats = feats.unsqueeze(0)
        out.append(feats)
    return out


def merge_scales(maps: list[Tensor], size: tuple[int, int]) -> Tensor:
    """Upsample each scale's (B, C, h, w) maps to ``size`` and sum them; then max-normalise each map.

    Summing or averaging the scales (IRN vs. LPCAM on VOC) differ only by a constant factor, which
    the max-normalisation removes.
    """
    total = sum(F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps)
    return max_normalise(total)


def max_normalise(maps: Tensor, eps: float = 1e-5) -> Tensor:
    """Divide each (B, C) map by its maximum (+eps, as IRN), so maps live in [0, 1)."""
    return maps / (maps.flatten(2).amax(2)[..., None, None] + eps)
