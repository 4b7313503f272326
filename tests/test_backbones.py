"""Backbones: geometry (output stride, channels) and weight loading without downloads."""

import pytest
import torch

from lpcam.errors import MissingInput
from lpcam.models.backbones import small_resnet, torchvision_resnet


@pytest.mark.parametrize("arch,os,channels", [("resnet18", 16, 512), ("resnet18", 8, 512), ("resnet50", 16, 2048)])
def test_torchvision_resnet_output_stride(arch, os, channels):
    net = torchvision_resnet(arch, output_stride=os).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, channels, 64 // os, 96 // os)
    assert net.stride == os and net.out_channels == channels and net.layer == "layer4"


def test_small_resnet_geometry_and_non_negative_features():
    net = small_resnet().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 96, 96))
    assert out.shape == (2, 128, 24, 24) and net.stride == 4
    assert out.min() >= 0  # post-ReLU features, as the paper's stage-4 output


def test_weights_from_a_file_and_clear_errors(tmp_path, monkeypatch):
    import torchvision

    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "r18.pth")
    net = torchvision_resnet("resnet18", weights=str(tmp_path / "r18.pth"))
    assert torch.equal(net.body[0].weight, state["conv1.weight"])
    with pytest.raises(MissingInput, match="backbone.weights=.*no such file"):
        torchvision_resnet("resnet18", weights=str(tmp_path / "missing.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingInput, match="not in the local cache"):
        torchvision_resnet("resnet18", pretrained=True)
    with pytest.raises(ValueError, match="output_stride"):
        torchvision_resnet("resnet18", output_stride=4)
