"""The one interface every CAM method implements, and the batch context they share.

A method turns a batch of images and their labels into (B, C, H, W) maps, each map max-normalised,
at the size asked for (the image's for evaluation and the ``high_res`` export, a quarter of it for
IRN's stride-4 ``cam``). Evaluation and export consume only this interface, so adding a method is
one module with a :class:`CamMethod` subclass.

Methods that read the classifier's unpooled features (CAM, every LPCAM rule) share one
multi-scale forward pass per batch through :class:`Batch`, and may memoise more there (the LPCAM
rules share one similarity computation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

from lpcam.cams.multiscale import merge_scales, multiscale_features


@dataclass
class Batch:
    """Images (B, 3, H, W) in [0, 1] and multi-hot labels (B, C), with the multi-scale features of
    ``extract`` computed on first use and kept for the other methods of the same batch."""

    images: Tensor
    labels: Tensor
    extract: Callable[[Tensor], Tensor]
    scales: Sequence[float] = (1.0,)
    flip: bool = False
    rescale: str = "bilinear"  # how the images are resized for a scale other than 1 (lpcam.cams.multiscale)
    upsample: str = "direct"  # how each scale's map reaches the image's size
    memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def features(self) -> list[Tensor]:
        """Per scale, (V, B, D, h, w) features (V = 2 with ``flip``): see ``multiscale_features``."""
        if "features" not in self.memo:
            self.memo["features"] = multiscale_features(self.extract, self.images, self.scales, self.flip, self.rescale)
        return self.memo["features"]

    @property
    def present(self) -> list[int]:
        """The classes labelled in some image of the batch (the others' maps stay zero)."""
        return self.labels.sum(0).nonzero().flatten().tolist()

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def upsample_to(self, size: tuple[int, int]) -> str:
        """The upsampling rule for maps of ``size``: the batch's at the image's size (IRN's
        ``high_res``), ``direct`` at any other (IRN resizes its stride-4 ``cam`` straight)."""
        return self.upsample if tuple(size) == self.size else "direct"


class CamMethod:
    """A CAM method. Subclasses give ``per_scale`` (unnormalised maps, one per test scale, merged
    here the way IRN does) or override ``maps`` itself when they produce finished maps."""

    name: str = "cam_method"
    needs_gradients: bool = False  # the trainer must then run without inference mode

    def per_scale(self, batch: Batch) -> list[Tensor]:
        raise NotImplementedError

    def maps(self, batch: Batch, size: tuple[int, int] | None = None) -> Tensor:
        """(B, C, *size) maps, each divided by its maximum (``size`` defaults to the image's)."""
        size = tuple(size or batch.size)
        return merge_scales(self.per_scale(batch), size, batch.upsample_to(size))


def resized(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Finished maps at another size (bilinear), as the merge resizes each scale's maps."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
