"""The CAM methods people already compare against, through the grad-cam package (pytorch-grad-cam).

Each baseline is the package's class, applied to the same classifier, at the same scales and flips
as CAM, for every class labelled in an image, so that the seed evaluation compares the methods and
nothing else. Per view the package returns a map min-max normalised per image at the view's size;
the views are flipped back, resized to the image, summed and max-normalised like CAM's.

Gradient methods need autograd during evaluation: the evaluation trainer then runs with
``inference_mode=False`` (see :attr:`lpcam.evaluator.CamEvaluator.needs_gradients`).
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


def check_baselines(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"evaluation.baselines: unknown method(s) {unknown}; known: {sorted(BASELINES)}")


def _quiet_scorecam() -> None:
    # ScoreCAM draws a progress bar per image and class; the evaluation already has one.
    score_cam.tqdm = types.SimpleNamespace(tqdm=lambda iterable, **_: iterable)


def baseline_maps(
    name: str,
    classifier: Classifier,
    images: Tensor,
    labels: Tensor,
    scales: Sequence[float],
    flip: bool,
) -> Tensor:
    """(B, C, H, W) maps of baseline ``name`` for the labelled classes (the others stay zero)."""
    method = BASELINES[name]
    size = images.shape[-2:]
    out = images.new_zeros(len(images), labels.shape[1], *size)
    if name == "scorecam":
        _quiet_scorecam()
    with method(model=classifier, target_layers=[classifier.backbone]) as cam:
        if name == "scorecam":
            cam.batch_size = SCORECAM_BATCH
        for s in scales:
            x = images if s == 1 else F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=False)
            for mirrored in (False, True) if flip else (False,):
                view = x.flip(-1) if mirrored else x
                for c in torch.nonzero(labels.sum(0)).flatten().tolist():
                    idx = torch.nonzero(labels[:, c]).flatten()
                    maps = torch.from_numpy(cam(input_tensor=view[idx], targets=[ClassifierOutputTarget(c)] * len(idx)))
                    maps = maps.to(images)[:, None]
                    if mirrored:
                        maps = maps.flip(-1)
                    out[idx, c] += F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]
    return max_normalise(out)
