"""LPCAM maps and each aggregation rule against hand-computed similarities."""

import math

import pytest
import torch

from lpcam.cams import aggregation
from lpcam.cams.prototype_maps import lpcam_maps, prototype_similarities
from lpcam.prototypes.store import Prototypes

# three positions (1x3 grid), one image, similarities to 2 class and 2 context prototypes
FG = torch.tensor([[0.9, 0.2, 0.1], [0.3, 0.8, 0.1]]).view(1, 2, 1, 3)
BG = torch.tensor([[0.1, 0.1, 0.9], [0.2, 0.6, 0.5]]).view(1, 2, 1, 3)


def test_official_is_relu_of_class_mean_minus_context_mean():
    out = aggregation.official(FG, BG)
    # class mean [0.6, 0.5, 0.1], context mean [0.15, 0.35, 0.7]
    torch.testing.assert_close(out.flatten(), torch.tensor([0.45, 0.15, 0.0]))


def test_official_without_context_is_class_mean():
    out = aggregation.official(FG, BG[:, :0])
    torch.testing.assert_close(out.flatten(), torch.tensor([0.6, 0.5, 0.1]))


def test_fg_only_ignores_context():
    torch.testing.assert_close(aggregation.fg_only(FG, BG).flatten(), torch.tensor([0.6, 0.5, 0.1]))


def test_max_is_nearest_prototype_margin():
    # max class [0.9, 0.8, 0.1], max context [0.2, 0.6, 0.9]
    torch.testing.assert_close(aggregation.max(FG, BG).flatten(), torch.tensor([0.7, 0.2, 0.0]))
    torch.testing.assert_close(aggregation.max(FG, BG[:, :0]).flatten(), torch.tensor([0.9, 0.8, 0.1]))


def test_topk_mean_lies_between_max_and_official():
    fg3 = torch.cat([FG, torch.full((1, 1, 1, 3), 0.5)], 1)  # a third class prototype
    # top-2 class means [0.7, 0.65, 0.3]; top-2 of two context prototypes is their mean
    torch.testing.assert_close(aggregation.topk_mean(fg3, BG, k=2).flatten(), torch.tensor([0.55, 0.3, 0.0]))
    torch.testing.assert_close(aggregation.topk_mean(FG, BG, k=1), aggregation.max(FG, BG))
    torch.testing.assert_close(aggregation.topk_mean(FG, BG, k=5), aggregation.official(FG, BG))


def test_score_weighted_weighs_class_by_score_and_context_by_its_complement():
    out = aggregation.score_weighted(FG, BG, torch.tensor([0.75, 0.25]), torch.tensor([0.5, 0.1]))
    # class: [0.75, 0.35, 0.1]; context weights (1-s) normalised [5/14, 9/14]: [2.3, 5.9, 9.0]/14
    torch.testing.assert_close(out.flatten(), torch.tensor([0.75 - 2.3 / 14, 0.0, 0.0]))
    same = aggregation.score_weighted(FG, BG, torch.full((2,), 0.95), torch.full((2,), 0.3))
    torch.testing.assert_close(same, aggregation.official(FG, BG))
    no_context = aggregation.score_weighted(FG, BG[:, :0], torch.tensor([1.0, 3.0]), torch.zeros(0))
    torch.testing.assert_close(no_context.flatten(), torch.tensor([0.45, 0.65, 0.1]))


def test_every_rule_has_one_config_naming_its_function():
    import functools
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    folder = Path(__file__).resolve().parents[1] / "conf/lpcam/aggregation"
    configs = {p.stem: instantiate(OmegaConf.load(p)) for p in folder.glob("*.yaml")}
    assert set(configs) == set(aggregation.RULES)
    for name, rule in configs.items():
        assert isinstance(rule, functools.partial) and aggregation.rule_name(rule) == name


def test_prototype_similarities_are_cosines():
    f = torch.tensor([[3.0, 0.0], [4.0, 1.0]]).view(1, 2, 1, 2)  # positions (3,4) and (0,1)
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    sims = prototype_similarities(f, p)
    torch.testing.assert_close(sims[0, :, 0], torch.tensor([[0.6, 0.0], [0.8, 1.0]]))  # (prototype, position)


def test_lpcam_maps_end_to_end_on_a_tiny_case():
    # D=2; class 0 has prototype e0 and context e1; class 1 has prototype e1 and no context
    protos = Prototypes(
        class_protos=[torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])],
        context_protos=[torch.tensor([[0.0, 1.0]]), torch.zeros(0, 2)],
    )
    f = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]).view(1, 1, 2, 1, 3)  # V=1: e0, diag, e1
    maps = lpcam_maps([f], protos, size=(1, 3), rule=aggregation.official)
    c = 1 / math.sqrt(2)
    # class 0: relu(cos(f,e0) - cos(f,e1)) = [1, 0, 0]; class 1: cos(f,e1) = [0, c, 1]
    torch.testing.assert_close(maps[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(maps[0, 1, 0], torch.tensor([0.0, c, 1.0]), atol=1e-4, rtol=0)
    only_one = lpcam_maps([f], protos, size=(1, 3), classes=[1])
    assert torch.equal(only_one[0, 0], torch.zeros(1, 3))


def test_lpcam_sums_flip_views_before_similarity():
    protos = Prototypes([torch.tensor([[1.0, 0.0]])], [torch.zeros(0, 2)])
    # two views whose sum points along e0 at position 0 although neither view does alone
    v1 = torch.tensor([[1.0], [1.0]]).view(1, 1, 2, 1, 1)
    v2 = torch.tensor([[1.0], [-1.0]]).view(1, 1, 2, 1, 1)
    f = torch.cat([torch.cat([v1, v2]), torch.tensor([[0.0], [1.0]]).view(1, 1, 2, 1, 1).repeat(2, 1, 1, 1, 1)], -1)
    maps = lpcam_maps([f], protos, size=(1, 2), rule=aggregation.fg_only)
    torch.testing.assert_close(maps[0, 0, 0], torch.tensor([1.0, 0.0]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("rule", list(aggregation.RULES.values()))
def test_rules_return_one_map_per_image(rule):
    out = rule(FG.repeat(3, 1, 1, 1), BG.repeat(3, 1, 1, 1), torch.ones(2), torch.full((2,), 0.5))
    assert out.shape == (3, 1, 3)


def test_maps_by_rule_equal_one_rule_at_a_time():
    from lpcam.cams.prototype_maps import lpcam_maps_by_rule

    torch.manual_seed(0)
    protos = Prototypes([torch.rand(3, 4), torch.rand(2, 4)], [torch.rand(2, 4), torch.zeros(0, 4)])
    views = [torch.rand(2, 2, 4, 3, 3), torch.rand(2, 2, 4, 2, 2)]
    together = lpcam_maps_by_rule(views, protos, (6, 6), aggregation.RULES)
    for name, rule in aggregation.RULES.items():
        torch.testing.assert_close(together[name], lpcam_maps(views, protos, (6, 6), rule))


def test_a_class_without_prototypes_gets_an_empty_map_not_nans():
    from lpcam.prototypes.clustering import cluster_and_select
    from lpcam.prototypes.pool import FeaturePool
    from lpcam.prototypes.settings import PrototypeSettings

    pool = FeaturePool(num_classes=2, dim=2, cap=100)
    feats = torch.tensor([[1.0, 0.9], [0.0, 0.1]]).view(2, 1, 2)  # (D, h, w): two positions
    pool.add(0, feats, torch.tensor([[True, False]]))
    pool.add(1, feats, torch.tensor([[False, False]]))  # class 1: its CAM is below tau everywhere
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    protos = cluster_and_select(pool, weights, ["a", "b"], PrototypeSettings(k=1), progress=False)
    assert len(protos.class_protos[1]) == 0 and len(protos.context_protos[1]) == 0 and protos.stats["b"]["no_foreground"]
    # Class 0 keeps (1, 0) as its prototype and (0.9, 0.1) as context: its map is positive only where
    # a feature points closer to the first, so one position is set there (random features alone
    # would leave it all zero about three times in four, the outcome then hanging on the global RNG).
    view = torch.rand(1, 1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    view[0, 0, :, 1, 1] = torch.tensor([2.0, 0.0])
    maps = lpcam_maps([view], protos, size=(3, 3))
    assert torch.isfinite(maps).all() and maps[0, 1].abs().sum() == 0 and maps[0, 0].max() > 0
