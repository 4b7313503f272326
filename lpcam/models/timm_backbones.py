"""timm backbones: any timm CNN through ``features_only``, and a ViT whose patch tokens form the map.

Both return a :class:`~lpcam.models.backbones.Backbone`, so CAM, LPCAM and the baselines use them
unchanged. ``pretrained=true`` reads the weights from the local Hugging Face cache (where timm
keeps them) and, when they are not there, lets timm download them as ``timm.create_model(...,
pretrained=True)`` does (``HF_ENDPOINT`` for a mirror); with downloads off (``LPCAM_OFFLINE=1`` or
``HF_HUB_OFFLINE=1``) a missing file is reported at once. ``weights=PATH`` reads a file instead. Both normalise their input with the mean and std of the model's own
``pretrained_cfg`` (0.5/0.5 for many ViTs, Inception and the TF EfficientNets), not ImageNet's.
"""

from __future__ import annotations

from pathlib import Path

import timm
from timm.data import resolve_model_data_config
from torch import Tensor, nn

from lpcam.downloads import offline
from lpcam.errors import MissingInput
from lpcam.models.backbones import Backbone


def _pretrained_file(model_name: str, weights: str | None) -> str | None:
    """The weights file for ``model_name``: ``weights`` if given, else timm's file in the local
    Hugging Face cache; None when it is not cached and downloads are allowed (timm then fetches
    it); with downloads off, a clear error naming the options."""
    if weights is not None:
        if not Path(weights).is_file():
            raise MissingInput(f"backbone.weights={weights}: no such file")
        return weights
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        repo, _, revision = hub_id.partition("@")
        for filename in ("model.safetensors", "pytorch_model.bin"):
            path = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(path, str):
                return path
    if not offline():
        return None
    raise MissingInput(
        f"backbone.pretrained=true: timm weights of {model_name} ({hub_id or 'no hub id'}) are not in the local "
        f"Hugging Face cache and downloads are off (LPCAM_OFFLINE=1 or HF_HUB_OFFLINE=1); copy them there, "
        f"unset the switch or pass backbone.weights=PATH"
    )


def _create(model_name: str, pretrained: bool, weights: str | None, **kwargs) -> nn.Module:
    if not (pretrained or weights):
        return timm.create_model(model_name, pretrained=False, **kwargs)
    file = _pretrained_file(model_name, weights)
    if file is None:  # timm downloads it through huggingface_hub (its progress bar, its cache, HF_ENDPOINT)
        return timm.create_model(model_name, pretrained=True, **kwargs)
    return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": file}, **kwargs)


def _normalisation(net: nn.Module) -> dict:
    """The input mean and std of ``net``'s pretrained config (timm's defaults, ImageNet's, where it
    has none), the same whether its weights are loaded or not."""
    cfg = resolve_model_data_config(net)
    return {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}


class _LastFeatureMap(nn.Module):
    """timm's ``features_only`` model returns a list of maps; keep the deepest."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[-1]


def timm_cnn(
    model_name: str = "resnet50",
    output_stride: int | None = 16,
    pretrained: bool = False,
    weights: str | None = None,
) -> Backbone:
    """A timm CNN's last feature map (``features_only``), at ``output_stride`` where the model
    supports it (dilation, as timm does it; None keeps the model's own stride)."""
    kwargs = {"features_only": True, "out_indices": (-1,)}
    if output_stride is not None:
        kwargs["output_stride"] = output_stride
    net = _create(model_name, pretrained, weights, **kwargs)
    info = net.feature_info
    return Backbone(
        _LastFeatureMap(net), info.channels()[-1], info.reduction()[-1], model_name, info.module_name()[-1],
        **_normalisation(net), pretrained=bool(pretrained or weights),
    )  # fmt: skip


class _PatchTokenMap(nn.Module):
    """ViT patch tokens as a (B, D, h, w) map: the class (and distillation) tokens dropped, the
    rest laid out on the patch grid. ``dynamic_img_size`` interpolates the position embedding, so
    every test-time scale works, as MCTformer uses DeiT's tokens."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.net.patch_embed.dynamic_feat_size(x.shape[-2:])
        tokens = self.net.forward_features(x)[:, self.net.num_prefix_tokens :]
        return tokens.transpose(1, 2).reshape(len(x), -1, h, w)


def vit_tokens(
    model_name: str = "deit_small_patch16_224",
    pretrained: bool = False,
    weights: str | None = None,
) -> Backbone:
    """A ViT (DeiT-S by default, MCTformer's backbone) whose last-block patch tokens are the features."""
    net = _create(model_name, pretrained, weights, num_classes=0, dynamic_img_size=True, dynamic_img_pad=True)
    patch = net.patch_embed.patch_size[0]
    return Backbone(
        _PatchTokenMap(net), net.num_features, patch, model_name, "blocks", **_normalisation(net),
        pretrained=bool(pretrained or weights),
    )  # fmt: skip
