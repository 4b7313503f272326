"""The grad-cam baselines against CAM, where the maths says they must agree, and in the pipeline."""

import pytest
import torch

from lpcam.cams.baselines import BASELINES, baseline_maps
from lpcam.cams.cam import cam_maps
from lpcam.cams.multiscale import multiscale_features
from lpcam.models.backbones import small_resnet
from lpcam.models.classifier import Classifier
from lpcam.pipeline import run


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    model = Classifier(small_resnet(), num_classes=3).eval()
    images = torch.rand(4, 3, 48, 48)
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    return model, images, labels


@pytest.mark.parametrize("name", ["gradcam", "xgradcam"])
def test_gradient_weighted_methods_equal_cam_on_a_gap_linear_head(classifier, name):
    # with global average pooling and a linear head, d score_c / d A_k = w_ck / (h w) everywhere,
    # so Grad-CAM's (and XGrad-CAM's) channel weights are CAM's up to a constant
    model, images, labels = classifier
    views = multiscale_features(model.features, images, scales=(1.0,), flip=False)
    cam = cam_maps(views, model.weights.detach(), images.shape[-2:])
    with torch.enable_grad():
        maps = baseline_maps(name, model, images, labels, scales=(1.0,), flip=False)
    for b, c in torch.nonzero(labels).tolist():
        torch.testing.assert_close(maps[b, c], cam[b, c], atol=5e-3, rtol=0)  # cv2 vs torch resizing
    assert maps[labels == 0].abs().sum() == 0  # classes not labelled stay empty


def test_layercam_keeps_only_positive_gradients(classifier):
    model, images, labels = classifier
    with torch.enable_grad():
        layer = baseline_maps("layercam", model, images, labels, scales=(1.0,), flip=False)
    views = multiscale_features(model.features, images, scales=(1.0,), flip=False)
    positive = model.weights.detach().clamp_min(0)  # LayerCAM: sum_k relu(w_ck) A_k here
    expected = cam_maps(views, positive, images.shape[-2:])[0, 0]
    expected = (expected - expected.min()) / (expected.max() - expected.min())  # the package min-max scales
    torch.testing.assert_close(layer[0, 0], expected, atol=5e-3, rtol=0)  # cv2 vs torch resizing


def test_every_baseline_gives_normalised_maps_at_several_scales(classifier):
    model, images, labels = classifier
    for name in BASELINES:
        with torch.enable_grad():
            maps = baseline_maps(name, model, images[:2], labels[:2], scales=(1.0, 0.5), flip=True)
        assert maps.shape == (2, 3, 48, 48)
        assert maps.min() >= 0 and maps.max() <= 1
        assert maps[0, 0].max() > 0.9  # max-normalised where the class is labelled


def test_unknown_baseline_is_refused_with_the_known_names():
    from lpcam.errors import InputError
    from lpcam.stages.evaluation import EvaluationSettings

    with pytest.raises(InputError, match="evaluation.baselines=.*gradcampp"):
        EvaluationSettings(baselines=["gradcam", "gradcam+++"])


def test_pipeline_evaluates_baselines_beside_cam_and_lpcam(tiny):
    results = run(tiny("method=gradcam", "evaluation.scales=[1.0]", "evaluation.flip=false"))  # one view for all
    assert list(results["methods"])[-1] == "gradcam"
    r, cam = results["methods"]["gradcam"], results["methods"]["cam"]
    assert len(r["curve"]) == 20 and r["part_recall"]
    assert results["timings_s"]["extraction_gradcam"] > 0
    # Grad-CAM is CAM on this head (test above): same seeds up to normalisation details
    assert abs(r["best"]["miou"] - cam["best"]["miou"]) < 2.0
