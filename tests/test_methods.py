"""The CAM-method interface: every method gives max-normalised (B, C, H, W) maps at any size, and the
feature-based ones share one forward pass per batch."""

from types import SimpleNamespace

import torch

from lpcam.cams import aggregation
from lpcam.cams.base import Batch, CamMethod
from lpcam.cams.cam import Cam, cam_maps, cam_per_scale
from lpcam.cams.multiscale import multiscale_features
from lpcam.cams.prototype_maps import Lpcam, lpcam_maps_by_rule
from lpcam.prototypes.store import Prototypes


def _setup():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)
    calls = {"n": 0}

    def extract(x):
        calls["n"] += 1
        return torch.relu(conv(x))

    images = torch.rand(2, 3, 37, 50)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    protos = Prototypes([torch.rand(2, 8), torch.rand(3, 8), torch.rand(1, 8)], [torch.rand(2, 8), torch.zeros(0, 8), torch.rand(1, 8)])
    return extract, calls, images, labels, protos


def test_methods_equal_the_functions_and_share_one_forward_pass_per_batch():
    extract, calls, images, labels, protos = _setup()
    weights = torch.rand(3, 8)
    batch = Batch(images, labels, extract, scales=(1.0, 0.5), flip=True)
    methods = [Cam(SimpleNamespace(weights=weights)), *(Lpcam(protos, rule, name) for name, rule in aggregation.RULES.items())]
    with torch.no_grad():
        maps = {m.name: m.maps(batch) for m in methods}
    assert calls["n"] == 2  # one forward per scale (image and flip together), for all six methods
    with torch.no_grad():
        views = multiscale_features(extract, images, (1.0, 0.5), True)
        torch.testing.assert_close(maps["cam"], cam_maps(views, weights, (37, 50)), rtol=0, atol=0)
        by_rule = lpcam_maps_by_rule(views, protos, (37, 50), aggregation.RULES, classes=[0, 1, 2])
    for name in aggregation.RULES:
        torch.testing.assert_close(maps[name], by_rule[name], rtol=0, atol=0)


def test_maps_at_irns_stride_4_are_max_normalised_per_channel():
    extract, _, images, labels, protos = _setup()
    batch = Batch(images, labels, extract, scales=(1.0,), flip=False)
    for method in (Cam(SimpleNamespace(weights=torch.rand(3, 8))), Lpcam(protos)):
        small = method.maps(batch, (10, 13))  # ceil(37 / 4), ceil(50 / 4)
        assert small.shape == (2, 3, 10, 13)
        peaks = small.flatten(2).amax(2)
        assert torch.all((peaks == 0) | ((peaks > 0.999) & (peaks < 1)))


class HalfCam(CamMethod):
    """A method added as a user would: this module and one yaml, nothing else edited. Half of
    CAM's evidence, which max-normalisation turns back into CAM (up to its 1e-5): the same seeds."""

    def __init__(self, classifier, prototypes, name: str = "half_cam") -> None:
        self.classifier, self.name = classifier, name  # its weights are read per call: it changes device

    def per_scale(self, batch: Batch) -> list:
        return [0.5 * m for m in cam_per_scale(batch.features, self.classifier.weights)]


def test_a_method_is_one_module_and_one_yaml(tiny, tmp_path):
    from lpcam.pipeline import run

    folder = tmp_path / "my_conf" / "method"
    folder.mkdir(parents=True)
    (folder / "half_cam.yaml").write_text(
        "# @package evaluation\nmethods:\n  - _target_: tests.test_methods.HalfCam\n    _partial_: true\n    name: half_cam\n"
    )
    results = run(tiny(f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "method=half_cam"))
    assert list(results["methods"])[-1] == "half_cam"
    assert results["methods"]["half_cam"]["curve"] == results["methods"]["cam"]["curve"]


def test_methods_read_the_classifier_when_called_not_when_built():
    """The trainer moves the classifier after the methods are built (to the GPU; here to float64,
    which replaces the parameters' data the same way): a method must not keep stale weights."""
    from lpcam.cams.aggregation import official
    from lpcam.models.backbones import small_resnet
    from lpcam.models.classifier import Classifier
    from lpcam.stages.evaluation import EvaluationSettings, build_methods, feature_batch

    classifier = Classifier(small_resnet(), num_classes=3).eval()
    protos = Prototypes([torch.rand(2, 128) for _ in range(3)], [torch.rand(1, 128) for _ in range(3)])
    settings = EvaluationSettings(scales=[1.0], flip=False)
    methods = build_methods(classifier, protos, official, settings)
    classifier.double()
    batch = feature_batch(classifier, torch.rand(1, 3, 32, 32, dtype=torch.float64), torch.tensor([[1.0, 0, 0]]), settings)
    with torch.no_grad():
        for method in methods.values():
            assert method.maps(batch).dtype == torch.float64
