"""Hand-computed checks of the seed evaluation protocol (lpcam.metrics.segmentation)."""

import math

import pytest
import torch

from lpcam.metrics.segmentation import (
    DEFAULT_THRESHOLDS,
    SeedConfusion,
    _seeds,
    scores,
    seeds_from_cams,
)

C = 4
NAMES = ["background", "cat", "dog", "bird"]
THRESHOLDS = (0.3, 0.65)

# 2x3 image, two labelled classes: map 0 is class 3, map 1 is class 1.
CAMS = torch.tensor(
    [
        [[0.9, 0.2, 0.4], [0.1, 0.6, 0.3]],  # class 3
        [[0.5, 0.7, 0.35], [0.2, 0.3, 0.25]],  # class 1
    ]
)
KEYS = torch.tensor([3, 1])
GT = torch.tensor([[3, 1, 1], [0, 3, 3]])
# Max / argmax per pixel: 0.9 c3 | 0.7 c1 | 0.4 c3 / 0.2 c1 | 0.6 c3 | 0.3 c3 (tie with t=0.3)
SEEDS_030 = torch.tensor([[3, 1, 3], [0, 3, 0]])  # last pixel: 0.3 == t -> background
SEEDS_065 = torch.tensor([[3, 1, 0], [0, 0, 0]])


def conf_from(entries):
    m = torch.zeros(C, C, dtype=torch.long)
    for (g, p), n in entries.items():
        m[g, p] = n
    return m


CONF_030 = conf_from({(0, 0): 1, (1, 1): 1, (1, 3): 1, (3, 3): 2, (3, 0): 1})
CONF_065 = conf_from({(0, 0): 1, (1, 1): 1, (1, 0): 1, (3, 3): 1, (3, 0): 2})


def test_default_thresholds():
    assert len(DEFAULT_THRESHOLDS) == 20
    assert DEFAULT_THRESHOLDS[:3] == (0.05, 0.1, 0.15)
    assert DEFAULT_THRESHOLDS[-2:] == (0.95, 0.99)


def test_seeds_by_hand_and_ties_to_background():
    assert torch.equal(seeds_from_cams(CAMS, KEYS, 0.3), SEEDS_030)
    assert torch.equal(seeds_from_cams(CAMS, KEYS, 0.65), SEEDS_065)
    flat = torch.full((1, 2, 2), 0.5)
    assert torch.equal(seeds_from_cams(flat, torch.tensor([2]), 0.5), torch.zeros(2, 2, dtype=torch.long))
    assert torch.equal(seeds_from_cams(flat, torch.tensor([2]), 0.45), torch.full((2, 2), 2))


def test_seeds_match_stacked_argmax_and_batched_slice():
    g = torch.Generator().manual_seed(0)
    cams = (torch.rand(3, 5, 7, generator=g) * 20).round() / 20  # many exact ties
    keys = torch.tensor([5, 2, 7])
    thresholds = torch.tensor(DEFAULT_THRESHOLDS)
    batched = _seeds(cams, keys, thresholds)
    lut = torch.cat([torch.zeros(1, dtype=torch.long), keys])
    for i, t in enumerate(DEFAULT_THRESHOLDS):
        reference = lut[torch.cat([torch.full((1, 5, 7), t), cams]).argmax(0)]
        single = seeds_from_cams(cams, keys, t)
        assert torch.equal(single, reference)
        assert torch.equal(single, batched[i])


def test_confusion_two_thresholds_by_hand():
    acc = SeedConfusion(C, THRESHOLDS)
    acc.update(CAMS, KEYS, GT)
    assert torch.equal(acc.confusion, torch.stack([CONF_030, CONF_065]))
    assert acc.confusion.dtype == torch.int64


def test_ignore_pixels_not_counted():
    gt = GT.clone()
    gt[0, 2] = 255  # the class-1 pixel predicted as 3 (t=0.3) or 0 (t=0.65)
    acc = SeedConfusion(C, THRESHOLDS)
    acc.update(CAMS, KEYS, gt, parts=torch.full((2, 3), 1, dtype=torch.uint8))
    expected_030, expected_065 = CONF_030.clone(), CONF_065.clone()
    expected_030[1, 3] -= 1
    expected_065[1, 0] -= 1
    assert torch.equal(acc.confusion, torch.stack([expected_030, expected_065]))
    assert acc.part_total.tolist() == [5, 0]

    all_ignored = SeedConfusion(C, THRESHOLDS)
    all_ignored.update(CAMS, KEYS, torch.full((2, 3), 255, dtype=torch.uint8))
    assert all_ignored.confusion.sum() == 0


def test_image_without_labelled_classes():
    acc = SeedConfusion(C, THRESHOLDS)
    acc.update(torch.zeros(0, 2, 3), torch.zeros(0, dtype=torch.long), GT)
    expected = conf_from({(0, 0): 1, (1, 0): 2, (3, 0): 3})
    assert torch.equal(acc.confusion, torch.stack([expected, expected]))
    assert torch.equal(seeds_from_cams(torch.zeros(0, 2, 3), torch.zeros(0, dtype=torch.long), 0.1),
                       torch.zeros(2, 3, dtype=torch.long))


def test_scores_by_hand():
    s = scores(CONF_030)
    # class 0: TP1 FP1 FN0; class 1: TP1 FP0 FN1; class 2: absent; class 3: TP2 FP1 FN1
    assert s["iou"][[0, 1, 3]].tolist() == [0.5, 0.5, 0.5]
    assert s["fp"][[0, 1, 3]].tolist() == [0.5, 0.0, 0.25]
    assert s["fn"][[0, 1, 3]].tolist() == [0.0, 0.5, 0.25]
    assert s["precision"][[0, 1, 3]].tolist() == [0.5, 1.0, 2 / 3]
    assert s["recall"][[0, 1, 3]].tolist() == [1.0, 0.5, 2 / 3]
    for name in ("iou", "fp", "fn", "precision", "recall"):
        assert math.isnan(s[name][2])  # empty union: nan and excluded from the means
    assert s["miou"] == pytest.approx(50.0)
    assert s["mfp"] == pytest.approx(25.0)
    assert s["mfn"] == pytest.approx(25.0)
    assert s["mprecision"] == pytest.approx(100 * (0.5 + 1 + 2 / 3) / 3)
    assert s["mrecall"] == pytest.approx(100 * (1 + 0.5 + 2 / 3) / 3)
    assert torch.allclose(s["iou"][[0, 1, 3]], 1 - s["fp"][[0, 1, 3]] - s["fn"][[0, 1, 3]])


def test_scores_perfect_and_never_predicted():
    perfect = scores(torch.diag(torch.tensor([3, 0, 5])))
    assert perfect["miou"] == 100.0 and perfect["mfp"] == 0.0 and perfect["mfn"] == 0.0
    never_predicted = scores(torch.tensor([[2, 0], [3, 0]]))  # class 1 present, never predicted
    assert never_predicted["precision"].tolist() == [0.4, 0.0]
    assert never_predicted["iou"].tolist() == [0.4, 0.0]
    assert never_predicted["miou"] == pytest.approx(20.0)


def test_part_recall_by_hand():
    parts = torch.tensor([[1, 1, 2], [0, 2, 2]], dtype=torch.uint8)
    acc = SeedConfusion(C, THRESHOLDS)
    acc.update(CAMS, KEYS, GT, parts)
    # t=0.3: part 1 hits (0,0),(0,1); part 2 hits only (1,1). t=0.65: part 2 hits none.
    assert acc.part_total.tolist() == [2, 3]
    assert acc.part_hits.tolist() == [[2, 1], [2, 0]]
    res = acc.results(NAMES, 0.65)
    assert res["part_recall"] == {"discriminative": 100.0, "shared": 33.3333}  # at the best threshold, 0.3
    # every curve point has its own: methods with different best thresholds compare at one
    assert [p["part_recall"] for p in res["curve"]] == [{"discriminative": 100.0, "shared": 33.3333},
                                                       {"discriminative": 100.0, "shared": 0.0}]
    assert "part_recall" not in res["best"] and "part_recall" not in res["default"]  # scalars, for loggers


def test_results_best_default_and_curve():
    acc = SeedConfusion(C, THRESHOLDS)
    acc.update(CAMS, KEYS, GT)
    res = acc.results(NAMES, 0.65)
    # t=0.65 IoUs: bg 1/4, cat 1/2, bird 1/3 -> 36.1111
    assert res["best"] == {"threshold": 0.3, "miou": 50.0, "fp": 25.0, "fn": 25.0,
                           "precision": 72.2222, "recall": 72.2222}
    assert res["default"]["threshold"] == 0.65
    assert res["default"]["miou"] == 36.1111
    assert res["per_class_iou"] == {"background": 50.0, "cat": 50.0, "dog": None, "bird": 50.0}
    assert "part_recall" not in res
    assert [p["threshold"] for p in res["curve"]] == [0.3, 0.65]
    assert res["curve"][0] == res["best"]

    full = SeedConfusion(C)
    full.update(CAMS, KEYS, GT)
    res = full.results(NAMES, 0.15)
    assert len(res["curve"]) == 20
    assert res["default"]["threshold"] == 0.15
    assert res["best"]["miou"] == max(p["miou"] for p in res["curve"])


def test_default_threshold_off_grid():
    acc = SeedConfusion(C, THRESHOLDS)
    with pytest.raises(ValueError, match=r"0\.5.*\[0\.3, 0\.65\]"):
        acc.results(NAMES, 0.5)


def test_merge_of_halves_equals_whole():
    parts = torch.tensor([[1, 1, 2], [0, 2, 2]], dtype=torch.uint8)
    whole = SeedConfusion(C)
    whole.update(CAMS, KEYS, GT, parts)
    top, bottom = SeedConfusion(C), SeedConfusion(C)
    top.update(CAMS[:, :1], KEYS, GT[:1], parts[:1])
    bottom.update(CAMS[:, 1:], KEYS, GT[1:], parts[1:])
    top.merge(bottom)
    for name, value in whole.state().items():
        assert torch.equal(top.state()[name], value)

    restored = SeedConfusion(C)
    restored.load_state({k: v.clone() for k, v in whole.state().items()})  # replaces, e.g. after all_reduce
    assert all(torch.equal(restored.state()[k], v) for k, v in whole.state().items())
    with pytest.raises(ValueError):
        top.merge(SeedConfusion(C, THRESHOLDS))
