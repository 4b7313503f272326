"""Multi-scale, flipped feature extraction shared by every CAM method (IRN's test-time protocol).

Two steps of that protocol have a switch each, because the official code (IRN's ``make_cam`` and
the official LPCAM's ``make_lpcam``, through IRN's data loader) does them differently from a
plain tensor pipeline, and the difference moves the seed mIoU by points:

* ``rescale``, how the image is resized for a scale other than 1: ``bilinear`` resizes the [0, 1]
  tensor (``F.interpolate``, no antialiasing); ``pil_bicubic`` resizes the 8-bit image with PIL's
  bicubic filter, which antialiases when it shrinks, as IRN's loader does before normalising.
* ``upsample``, how each scale's map reaches the image's size: ``direct`` resizes it straight to
  (H, W); ``padded`` resizes it to the size rounded up to a multiple of 16 and crops the top-left
  (H, W), as IRN's ``strided_up_size``. The two agree when H and W are multiples of 16.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

DEFAULT_SCALES = (1.0, 0.5, 1.5, 2.0)
RESCALES = ("bilinear", "pil_bicubic")
UPSAMPLES = ("direct", "padded")
PAD_STRIDE = 16  # IRN's get_strided_up_size(size, 16), whatever the backbone's output stride


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(round(H·s), round(W·s)), rounding halves to even as ``np.round`` in IRN's ``pil_rescale``."""
    return round(size[0] * scale), round(size[1] * scale)


def rescale_images(images: Tensor, size: tuple[int, int], rescale: str = "bilinear") -> Tensor:
    """(B, 3, H, W) images in [0, 1] resized to ``size`` by the ``rescale`` rule (module docstring)."""
    if rescale == "bilinear":
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    if rescale == "pil_bicubic":
        return pil_bicubic(images, size)
    raise ValueError(f"rescale={rescale!r}: expected one of {RESCALES}")


def uint8_pixels(image: Tensor) -> np.ndarray:
    """A (3, H, W) image in [0, 1] as the (H, W, 3) 8-bit RGB pixels it was read as (lpcam's
    images are uint8 / 255)."""
    return (image.detach().permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def pil_bicubic(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Each image as 8-bit RGB, resized by PIL's bicubic filter, and back to [0, 1]: IRN's
    ``pil_rescale(img, s, order=3)``."""
    h, w = size
    out = []
    for image in images:
        resized = np.asarray(Image.fromarray(uint8_pixels(image)).resize((w, h), Image.BICUBIC))
        out.append(torch.from_numpy(resized.copy()).permute(2, 0, 1))
    return (torch.stack(out).to(device=images.device, dtype=images.dtype)) / 255


def multiscale_features(
    extract: Callable[[Tensor], Tensor],
    images: Tensor,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    rescale: str = "bilinear",
) -> list[Tensor]:
    """For each scale, the features of the rescaled batch and of its mirror image, the mirror's
    flipped back so both views align: a list of (V, B, D, h, w) tensors, V = 2 with ``flip``.

    One forward pass per scale over the batch and its flip together: batched, never per image.
    Scale 1 is the images themselves; the others are resized by ``rescale``.
    """
    out = []
    size = tuple(images.shape[-2:])
    for s in scales:
        x = images if s == 1 else rescale_images(images, scaled_size(size, s), rescale)
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


def upsampled(maps: Tensor, size: tuple[int, int], upsample: str = "direct") -> Tensor:
    """(B, C, h, w) maps resized (bilinear) to ``size`` by the ``upsample`` rule (module docstring)."""
    if upsample == "direct":
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    if upsample == "padded":
        h, w = size
        padded = (-(-h // PAD_STRIDE) * PAD_STRIDE, -(-w // PAD_STRIDE) * PAD_STRIDE)
        return F.interpolate(maps, size=padded, mode="bilinear", align_corners=False)[..., :h, :w]
    raise ValueError(f"upsample={upsample!r}: expected one of {UPSAMPLES}")


def merge_scales(maps: list[Tensor], size: tuple[int, int], upsample: str = "direct") -> Tensor:
    """Upsample each scale's (B, C, h, w) maps to ``size`` and sum them; then max-normalise each map.

    Summing or averaging the scales (IRN vs. LPCAM on VOC) differ only by a constant factor, which
    the max-normalisation removes.
    """
    total = sum(upsampled(m, size, upsample) for m in maps)
    return max_normalise(total)


def max_normalise(maps: Tensor, eps: float = 1e-5) -> Tensor:
    """Divide each (B, C) map by its maximum (+eps, as IRN), so maps live in [0, 1)."""
    return maps / (maps.flatten(2).amax(2)[..., None, None] + eps)
