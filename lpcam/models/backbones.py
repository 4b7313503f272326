"""Backbones: an image → its unpooled feature map, with a known stride and channel count.

Every backbone is a ``Backbone``: it normalises its [0, 1] RGB input itself (so the data pipeline,
CAM code and figures share one pixel space), with the mean and std its weights were trained with
(ImageNet's for torchvision and ``small_resnet``, the model's ``pretrained_cfg`` for timm), and
exposes ``out_channels`` and ``stride``. A config
file in ``conf/backbone/`` picks one of the builders below by ``_target_``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1

from lpcam.downloads import RemoteFile, fetch, hub_hash_prefix
from lpcam.errors import InputError, MissingInput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Wraps a feature extractor with input normalisation and its geometry.

    ``mean`` and ``std`` (per RGB channel, for [0, 1] input) are the normalisation the body expects;
    they default to ImageNet's. They are kept as the (non-persistent) buffers ``mean`` and ``std``,
    and as plain tuples in :attr:`normalisation`, which says which one a backbone uses.
    ``pretrained`` says whether the body was built with loaded weights (not random ones): the
    frozen-backbone mode warns without them.
    """

    def __init__(
        self,
        body: nn.Module,
        out_channels: int,
        stride: int,
        name: str,
        layer: str,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"backbone normalisation needs 3 means and 3 positive stds, got mean={mean} std={std}")
        # channels-last: about 2x faster convolutions on CPU (oneDNN) and what tensor cores want
        self.body = body.to(memory_format=torch.channels_last)
        self.out_channels = out_channels
        self.stride = stride
        self.name = name
        self.layer = layer  # which activation the features are (recorded in the prototypes file)
        self.normalisation = {"mean": mean, "std": std}
        self.pretrained = pretrained
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: Tensor) -> Tensor:
        """[0, 1] RGB images as the body expects them (its mean and std, channels-last)."""
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> Tensor:
        return self.body(self.normalise(images)).contiguous()


def _set_stride_one(layer: nn.Sequential) -> None:
    """Turn the first block's stride-2 convolution (and its shortcut) into stride 1, as IRN does."""
    block = layer[0]
    conv = block.conv2 if hasattr(block, "conv3") else block.conv1  # torchvision puts it on conv2 in Bottleneck
    conv.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)


def torchvision_resnet(
    arch: str = "resnet50",
    output_stride: int = 16,
    pretrained: bool = False,
    weights: str | None = None,
    pretrained_weights: str = "DEFAULT",
) -> Backbone:
    """A torchvision ResNet cut after layer4, with output stride 32, 16 or 8.

    The paper's backbone is ``resnet50`` at output stride 16 (IRN's strides 2, 2, 2, 1). Lowering
    the stride removes the stride of layer4 (and layer3 for 8) without dilation, like IRN.
    ``pretrained`` loads torchvision's ImageNet weights from the torch hub cache, downloading them
    (checked, resumable: :mod:`lpcam.downloads`) when they are not there, unless downloads are
    off (``LPCAM_OFFLINE=1``); ``pretrained_weights`` names which of torchvision's weights
    (``DEFAULT``, ``IMAGENET1K_V1``: IRN's and the official LPCAM code's, ``IMAGENET1K_V2``);
    ``weights`` loads a state dict from a file.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"backbone.output_stride must be 8, 16 or 32, got {output_stride}")
    net = getattr(torchvision.models, arch)(weights=None)
    if pretrained or weights:
        net.load_state_dict(_load_weights(arch, weights, pretrained_weights))
    if output_stride <= 16:
        _set_stride_one(net.layer4)
    if output_stride == 8:
        _set_stride_one(net.layer3)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return Backbone(body, net.fc.in_features, output_stride, arch, "layer4", pretrained=bool(pretrained or weights))


def _load_weights(arch: str, path: str | None, tag: str = "DEFAULT") -> dict:
    if path is not None:
        if not Path(path).is_file():
            raise MissingInput(f"backbone.weights={path}: no such file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state)
    remote = imagenet_weights(arch, tag)
    cached = fetch(remote, Path(torch.hub.get_dir()) / "checkpoints" / remote.filename)
    return torch.load(cached, map_location="cpu", weights_only=True)


def imagenet_weights(arch: str, tag: str = "DEFAULT") -> RemoteFile:
    """torchvision's ImageNet weights ``tag`` of ``arch``: its URL, and the SHA-256 prefix its file
    name carries (torch hub's check). They are cached where ``torchvision.models.<arch>(weights=
    tag)`` caches them, so either reads what the other downloaded."""
    enum = torchvision.models.get_model_weights(arch)
    if tag not in enum.__members__:
        raise InputError(f"backbone.pretrained_weights={tag!r}: expected one of {sorted(enum.__members__)} (torchvision's {enum.__name__})")
    url = enum[tag].url
    return RemoteFile(url, hub_hash_prefix(Path(url).name) or "", f"{arch} ImageNet weights")


def small_resnet(
    widths: Sequence[int] = (32, 64, 128),
    blocks: Sequence[int] = (1, 1, 1),
    strides: Sequence[int] = (2, 2, 1),
    stem_width: int = 16,
) -> Backbone:
    """A narrow ResNet of torchvision ``BasicBlock``s, randomly initialised: the CPU default.

    Why not resnet18: its receptive field (hundreds of pixels) covers a whole 96 px object, so
    every body position "sees" the head and CAM covers the body, which hides the phenomenon the
    benchmark exists to show. With the defaults (3×3 stem, strides 2, 2, 1) the output stride is
    4 and the theoretical receptive field 37 px, against bodies of 35–50 px.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(3, stem_width, 3, padding=1, bias=False),
        nn.BatchNorm2d(stem_width),
        nn.ReLU(inplace=True),
    ]
    inplanes = stem_width
    for width, n, stride in zip(widths, blocks, strides):
        down = None
        if stride != 1 or inplanes != width:
            down = nn.Sequential(conv1x1(inplanes, width, stride), nn.BatchNorm2d(width))
        layers.append(BasicBlock(inplanes, width, stride, down))
        layers += [BasicBlock(width, width) for _ in range(n - 1)]
        inplanes = width
    body = nn.Sequential(*layers)
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    stride = 1
    for s in strides:
        stride *= s
    return Backbone(body, inplanes, stride, "small_resnet", f"layer{len(widths)}")
