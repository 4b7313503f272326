"""The CAM methods people already compare against, through the grad-cam package (pytorch-grad-cam).

Each baseline is the package's class, applied to the same classifier, for every class labelled in
an image, and scored by the same seed evaluation. By default it sees one view (the image at scale
1, the package's usual use); ``evaluation.baseline_scales``/``baseline_flip`` give it CAM's test-time
views instead, at one backward pass (ScoreCAM: one forward per channel) per view. Per view the
package returns a map min-max normalised per image; the views are flipped back, resized to the
image, summed and max-normalised like CAM's.

Gradient methods need autograd during evaluation: the evaluation trainer then runs with
``inference_mode=False`` (see :attr:`lpcam.stages.evaluation.CamEvaluator.needs_gradients`).
"""

from __future__ import annotations

import types
from typing import Sequence

import pytorch_grad_cam
import torch
import torch.nn.functional as F
from pytorch_grad_cam import score_cam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor

from lpcam.cams.base import Batch, CamMethod, resized
from lpcam.cams.multiscale import max_normalise
from lpcam.models.classifier import Classifier

BASELINES: dict[str, type] = {
    "gradcam": pytorch_grad_cam.GradCAM,
    "gradcampp": pytorch_grad_cam.GradCAMPlusPlus,
    "xgradcam": pytorch_grad_cam.XGradCAM,
    "layercam": pytorch_grad_cam.LayerCAM,
    "scorecam": pytorch_grad_cam.ScoreCAM,
}
GRADIENT_FREE = {"scorecam"}
SCORECAM_BATCH = 128  # masked images per forward pass (the package's default, 16, is slow on CPU)


def _quiet_scorecam() -> None:
    # ScoreCAM draws a progress bar per image and class; the evaluation already has one.
    score_cam.tqdm = types.SimpleNamespace(tqdm=lambda iterable, **_: iterable)


def baseline_maps(
    name: str,
    classifier: Classifier,
    images: Tensor,
    labels: Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> Tensor:
    """(B, C, H, W) maps of baseline ``name`` for the labelled classes (the others stay zero).

    Every (image, labelled class) pair of the batch goes through the package in one call per
    view, each pair with its own target, rather than one call per class.
    """
    method = BASELINES[name]
    size = images.shape[-2:]
    out = images.new_zeros(len(images), labels.shape[1], *size)
    pairs = torch.nonzero(labels)  # (n, 2): image index, class index
    if not len(pairs):
        return out
    if name == "scorecam":
        _quiet_scorecam()
    targets = [ClassifierOutputTarget(int(c)) for c in pairs[:, 1]]
    with method(model=classifier, target_layers=[classifier.backbone]) as cam:
        if name == "scorecam":
            cam.batch_size = SCORECAM_BATCH
        for s in scales:
            x = images if s == 1 else F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=False)
            for mirrored in (False, True) if flip else (False,):
                view = x.flip(-1) if mirrored else x
                maps = torch.from_numpy(cam(input_tensor=view[pairs[:, 0]], targets=targets)).to(images)[:, None]
                if mirrored:
                    maps = maps.flip(-1)
                out[pairs[:, 0], pairs[:, 1]] += F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]
    return max_normalise(out)


class GradCamBaseline(CamMethod):
    """A grad-cam package method at its own views (``scales``, ``flip``), as a :class:`CamMethod`."""

    def __init__(self, name: str, classifier: Classifier, scales: Sequence[float] = (1.0,), flip: bool = False) -> None:
        self.name, self.classifier, self.scales, self.flip = name, classifier, tuple(scales), flip
        self.needs_gradients = name not in GRADIENT_FREE

    def maps(self, batch: Batch, size: tuple[int, int] | None = None) -> Tensor:
        with torch.enable_grad():  # gradient methods backpropagate, also under no_grad
            maps = baseline_maps(self.name, self.classifier, batch.images, batch.labels, self.scales, self.flip)
        if size is None or tuple(size) == batch.size:
            return maps
        return max_normalise(resized(maps, size))
