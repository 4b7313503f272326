"""experiments/body_features.py: the positions it reads are the prototype build's split, its
probe measures separation on held-out images, and --terms scores the map's two terms."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from lpcam.models.classifier import Classifier
from lpcam.pipeline import prototype_settings
from lpcam.stages.prototypes import collect_features
from tests.conftest import experiment_script


@pytest.fixture(scope="module")
def body_features():
    yield from experiment_script("body_features")


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
        classes=torch.zeros(images * 40, dtype=torch.long),
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


def _two_directions(body_features):
    """Class 0's bodies along feature 0 and its background along feature 1; class 1 the other way
    round (so a pooled AUC would mix them), each with a little noise."""
    g = torch.Generator().manual_seed(0)
    tags = torch.tensor([0] * 20 + [2] * 10, dtype=torch.int8).repeat(2)
    classes = torch.tensor([0, 1]).repeat_interleave(30)
    feats = 0.3 * torch.randn(60, 4, generator=g)
    on_body = tags == 2
    feats[:, 0] += ((classes == 0) & on_body) | ((classes == 1) & ~on_body)
    feats[:, 1] += ((classes == 0) & ~on_body) | ((classes == 1) & on_body)
    return body_features.Positions(
        features=feats, tags=tags, images=torch.arange(60) // 10, foreground=on_body, classes=classes
    )  # fmt: skip


def test_map_terms_are_each_class_own_mean_similarities(body_features):
    p = _two_directions(body_features)
    e = torch.eye(4)
    class_protos, context_protos = [e[[0, 2]], e[[1]]], [e[[1]], e[:0]]  # class 1 has no context
    fg, bg = body_features.map_terms(p, class_protos, context_protos)
    unit = torch.nn.functional.normalize(p.features, dim=1)
    first, second = p.classes == 0, p.classes == 1
    assert torch.allclose(fg[first], (unit[first][:, 0] + unit[first][:, 2]) / 2)
    assert torch.allclose(fg[second], unit[second][:, 1])
    assert torch.allclose(bg[first], unit[first][:, 1])
    assert torch.equal(bg[second], torch.zeros(int(second.sum())))  # no context: the class term alone


def test_term_auc_ranks_bodies_per_class(body_features):
    """Prototypes on each class's bodies rank them first (AUC 1); the same ones as context, negated,
    rank them last (0); a class without heads gives no head AUC."""
    p = _two_directions(body_features)
    e = torch.eye(4)
    on_bodies, off_bodies = [e[[0]], e[[1]]], [e[[1]], e[[0]]]
    fg, bg = body_features.map_terms(p, on_bodies, on_bodies)
    assert body_features.term_auc(fg, p, part=2) == pytest.approx(1.0)
    assert body_features.term_auc(-bg, p, part=2) == pytest.approx(0.0)
    fg, _ = body_features.map_terms(p, off_bodies, on_bodies)
    assert body_features.term_auc(fg, p, part=2) == pytest.approx(0.0)
    assert math.isnan(body_features.term_auc(fg, p, part=1))
    assert math.isnan(body_features.term_auc(fg, p, part=1, against=2))  # heads against bodies: no heads
    assert body_features.term_auc(fg, p, part=0, against=2) == pytest.approx(1.0)  # off-object above bodies here


def test_terms_table_of_a_finished_run(body_features, uninterrupted, capsys):
    """On a finished tiny run, --terms prints its prototype counts (as results.json has them) and
    AUCs between 0 and 1 for the tiny benchmark's bodies and heads."""
    body_features.main([str(uninterrupted["run"]), "--terms"])
    lines = capsys.readouterr().out.splitlines()
    terms = [line.strip("|").split("|")[1:] for line in lines if line.count("|") == 11 and "0." in line]
    assert len(terms) == 2 and terms[0] == terms[1]  # printed as it goes, then in its table
    cells = terms[-1]
    counts = uninterrupted["results"]["prototypes"]["counts"].values()
    assert float(cells[0]) == pytest.approx(sum(c["class"] for c in counts) / len(counts), abs=0.05)
    assert float(cells[1]) == pytest.approx(sum(c["context"] for c in counts) / len(counts), abs=0.05)
    assert all(0.0 <= float(v) <= 1.0 for v in cells[2:])


def test_terms_refuses_runs_without_prototypes_before_reading_any(body_features, tmp_path):
    """A run without prototypes.pt is named before any run is read (each takes minutes): the first
    directory here has prototypes but no config, so reading it would fail otherwise."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    (first / "prototypes.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match="second: no prototypes.pt"):
        body_features.main([str(first), str(second), "--terms"])
