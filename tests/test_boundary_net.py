"""IRN's class-boundary branch on lpcam's backbones: the stages it reads, what trains, and that
IRN's affinity loss trains it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lpcam.errors import InputError
from lpcam.models.backbones import Backbone, small_resnet, torchvision_resnet
from lpcam.refine.affinity_loss import IGNORE, affinity_loss
from lpcam.refine.boundary_net import BoundaryNet, feature_levels


def test_on_resnet50_it_reads_irns_five_stages():
    body = torchvision_resnet("resnet50", output_stride=16).body
    # the stem after max-pooling, layer1 .. layer4: IRN's x1 .. x5 (strides 4, 4, 8, 16, 16)
    assert feature_levels(body) == [(3, 64, 4), (4, 256, 4), (5, 512, 8), (6, 1024, 16), (7, 2048, 16)]


def test_on_the_default_backbone_it_reads_the_stride_4_blocks_and_only_its_head_trains():
    net = BoundaryNet(small_resnet())
    assert [(c, s) for _, c, s in net.levels] == [(64, 4), (128, 4)] and net.stride == 4
    out = net(torch.rand(2, 3, 96, 80))
    assert out.shape == (2, 1, 24, 20)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(not n.startswith("backbone.") for n in trainable)
    net.train()
    net(torch.rand(1, 3, 32, 32))
    assert not net.backbone.training  # frozen BatchNorm statistics, as IRN's FixedBatchNorm
    b = net.boundary(torch.rand(3, 96, 80))
    assert b.shape == (24, 20) and 0 <= b.min() and b.max() <= 1


def test_a_backbone_without_stages_is_refused_in_one_line():
    flat = Backbone(nn.Conv2d(3, 8, 3, stride=4, padding=1), 8, 4, "flat", "conv")
    with pytest.raises(InputError, match=r"backbone flat: the boundary network needs its stages \(a torch nn.Sequential body\); its body is a Conv2d"):
        BoundaryNet(flat)


def test_irns_affinity_loss_trains_its_head():
    torch.manual_seed(0)
    net = BoundaryNet(small_resnet())
    images = torch.rand(2, 3, 64, 64)
    images[:, :, :, 32:] = images[:, :, :, 32:] * 0.2 + 0.8  # a bright right half
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, :, 8:] = 5
    labels[:, :, 7:9] = IGNORE
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = affinity_loss(torch.sigmoid(net(images))[:, 0], labels, radius=5)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    b = torch.sigmoid(net(images))[:, 0].detach()
    assert b[:, :, 7:9].mean() > b[:, :, :5].mean() + 0.3  # the boundary where the labels change
