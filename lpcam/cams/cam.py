"""Classic CAM (Zhou et al. 2016) as IRN's ``make_cam`` computes it."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lpcam.cams.base import Batch, CamMethod
from lpcam.cams.multiscale import merge_scales


def cam_maps(feature_views: list[Tensor], weights: Tensor, size: tuple[int, int], upsample: str = "direct") -> Tensor:
    """(B, C, H, W) CAMs for every class from per-scale (V, B, D, h, w) features.

    Per view ``ReLU(w_c · f)``; the views of a scale (image and flip) are summed, the scales
    upsampled to ``size`` (by the ``upsample`` rule of :mod:`lpcam.cams.multiscale`) and summed,
    each map divided by its maximum.
    """
    return merge_scales(cam_per_scale(feature_views, weights), size, upsample)


def cam_per_scale(feature_views: list[Tensor], weights: Tensor) -> list[Tensor]:
    """Per scale, (B, C, h, w) ``ReLU(w_c · f)`` summed over the scale's views."""
    return [F.relu(torch.einsum("vbdhw,cd->vbchw", f, weights)).sum(0) for f in feature_views]


class Cam(CamMethod):
    """Classic CAM of a classifier's weights over its unpooled features.

    ``classifier`` is anything with a ``weights`` (C, D) attribute; it is read at every call, not
    kept, because the trainer moves the classifier to its device after the method is built."""

    name = "cam"

    def __init__(self, classifier: Any) -> None:
        self.classifier = classifier

    def per_scale(self, batch: Batch) -> list[Tensor]:
        return cam_per_scale(batch.features, self.classifier.weights)
