"""experiments/body_features.py: the positions it reads are the prototype build's split, and its
probe measures separation on held-out images."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lpcam.models.classifier import Classifier
from lpcam.pipeline import prototype_settings
from lpcam.stages.prototypes import collect_features

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def body_features():
    spec = importlib.util.spec_from_file_location("body_features", ROOT / "experiments" / "body_features.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["body_features"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["body_features"]


def test_positions_are_split_and_tagged_as_the_prototype_build(body_features, tiny):
    """Its foreground positions are the pool's: the same number and the same ground-truth tags
    (the pool keeps every one of the tiny split's positions), by the same CAM, views and τ."""
    cfg = tiny()
    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    settings = prototype_settings(cfg)
    torch.manual_seed(0)
    model = Classifier(instantiate(cfg.backbone), num_classes=dm.num_classes).eval()
    pool = collect_features(model, dm.prototype_dataloader(), dm.num_classes, settings, progress=False)
    p = body_features.positions(model, dm.prototype_dataloader(), settings)
    assert p.features.shape[0] == p.tags.shape[0] == p.images.shape[0] == p.foreground.shape[0]
    assert int(p.images.max()) == len(dm.prototype_dataloader().dataset) - 1
    fg_tags = torch.cat([side.tags for side in pool.fg]).long()
    assert sum(side.seen for side in pool.fg) == int(p.foreground.sum()) == len(fg_tags)  # nothing dropped by the cap
    assert torch.equal(torch.bincount(p.tags[p.foreground].long() + 1, minlength=5), torch.bincount(fg_tags + 1, minlength=5))
    assert {1, 2} <= set(p.tags.unique().tolist())  # the benchmark's heads and bodies are there to probe


def _positions(body_features, shift: float, images: int = 40, seed: int = 0):
    """Per image 30 off-object positions and 10 body positions, bodies shifted by ``shift`` along
    feature 0; the other features carry an offset per image, shared by its bodies and background."""
    g = torch.Generator().manual_seed(seed)
    per = torch.tensor([0] * 30 + [2] * 10, dtype=torch.int8)
    feats = torch.randn(images, 40, 8, generator=g)
    feats[:, :, 1:] += 3 * torch.randn(images, 1, 7, generator=g)
    feats[:, 30:, 0] += shift
    return body_features.Positions(
        features=feats.flatten(0, 1), tags=per.repeat(images), images=torch.arange(images).repeat_interleave(40),
        foreground=(per.repeat(images) == 2) | (torch.arange(images * 40) % 4 == 0),
    )  # fmt: skip


def test_probe_auc_tells_separated_bodies_from_background_and_not_alike_ones(body_features):
    assert body_features.probe_auc(_positions(body_features, shift=4.0), part=2) > 0.95
    assert abs(body_features.probe_auc(_positions(body_features, shift=0.0), part=2) - 0.5) < 0.1
    assert math.isnan(body_features.probe_auc(_positions(body_features, shift=4.0), part=1))  # no heads: no probe


def test_foreground_share_is_the_percent_of_a_tag_above_tau(body_features):
    p = _positions(body_features, shift=0.0)
    assert body_features.foreground_share(p, 2) == 100.0
    assert body_features.foreground_share(p, 0) == pytest.approx(100.0 * 8 / 30)  # positions 0, 4, ..., 28 of each image
    assert math.isnan(body_features.foreground_share(p, 1))
