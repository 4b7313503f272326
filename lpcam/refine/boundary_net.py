"""IRN's class-boundary branch on any lpcam backbone whose body is a sequence of stages.

IRN (``net/resnet50_irn.py``) predicts a class-boundary map at stride 4 from every stage of a
frozen ResNet-50: each stage's features go through a 1×1 convolution to 32 channels, GroupNorm
(4 groups), bilinear upsampling to the finest stage's grid (IRN upsamples by the stride ratio and
crops, the same where the sizes divide) and ReLU; the concatenation goes
through a 1×1 convolution to one logit per position. The backbone's features are detached, so
only this head trains (IRN's ``trainable_parameters``).

Here the stages are found in the backbone's body (an ``nn.Sequential``) by running a probe image:
a level is the output of the last module before the channels or the stride change, and the last
module's, at the strides from the finest one at or above 4 (IRN: the stem after max-pooling at
stride 4, layer1 at 4, layer2 at 8, layer3 and layer4 at 16; the default ``small_resnet``: its
second and third blocks at 4). A body that is not a sequence of stages (a timm ``features_only``
model, a ViT's tokens) is refused in one line.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpcam.errors import InputError
from lpcam.models.backbones import Backbone

HEAD_WIDTH = 32
MIN_STRIDE = 4


def feature_levels(body: nn.Module, name: str = "backbone", probe: int = 64) -> list[tuple[int, int, int]]:
    """(index of the module in ``body``, channels, stride) of each level the head reads."""
    if not isinstance(body, nn.Sequential) or len(body) < 2:
        raise InputError(
            f"backbone {name}: the boundary network needs its stages (a torch nn.Sequential body); "
            f"its body is a {type(body).__name__}; use a ResNet (backbone=resnet50, small_resnet)"
        )
    shapes = []
    was = body.training
    body.eval()
    with torch.no_grad():
        x = torch.zeros(1, 3, probe, probe)
        for module in body:
            x = module(x)
            if x.dim() != 4:
                raise InputError(f"backbone {name}: a stage gives a {x.dim()}-d output, not a feature map; use a CNN backbone")
            shapes.append((x.shape[1], probe // x.shape[-1]))
    body.train(was)
    ends = [i for i in range(len(shapes)) if i == len(shapes) - 1 or shapes[i] != shapes[i + 1]]
    strides = sorted({shapes[i][1] for i in ends})
    finest = next((s for s in strides if s >= MIN_STRIDE), strides[-1])
    return [(i, *shapes[i]) for i in ends if shapes[i][1] >= finest]


class BoundaryNet(nn.Module):
    """Class-boundary logits at the finest level's stride from a frozen backbone's stages."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.levels = feature_levels(backbone.body, backbone.name)
        self.stride = self.levels[0][2]
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, HEAD_WIDTH, 1, bias=False), nn.GroupNorm(4, HEAD_WIDTH))
            for _, channels, _ in self.levels
        )
        self.fuse = nn.Conv2d(HEAD_WIDTH * len(self.levels), 1, 1, bias=True)
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def features(self, images: Tensor) -> list[Tensor]:
        # frozen, its BatchNorm statistics included (IRN's FixedBatchNorm): in eval mode whatever
        # mode a trainer set (Lightning sets each submodule's mode itself, not through train())
        if self.backbone.training:
            self.backbone.eval()
        wanted = {i for i, _, _ in self.levels}
        x = self.backbone.normalise(images)
        out = []
        with torch.no_grad():
            for i, module in enumerate(self.backbone.body):
                x = module(x)
                if i in wanted:
                    out.append(x.detach().contiguous())
                if i >= self.levels[-1][0]:
                    break
        return out

    def forward(self, images: Tensor) -> Tensor:
        """(B, 1, h, w) boundary logits, h × w the finest level's grid."""
        feats = self.features(images)
        size = feats[0].shape[-2:]
        maps = [
            F.relu(F.interpolate(head(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size else head(f))
            for head, f in zip(self.heads, feats)
        ]
        return self.fuse(torch.cat(maps, dim=1))

    @torch.no_grad()
    def boundary(self, image: Tensor) -> Tensor:
        """IRN's inference on one image (3, H, W): the mean of the logits of it and of its mirror
        image, through a sigmoid; (h, w) at the net's stride."""
        both = torch.stack([image, image.flip(-1)])
        logits = self(both)[:, 0]
        return torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)
