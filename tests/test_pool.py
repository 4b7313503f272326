"""Bounded, uniform, seeded feature sampling for the k-means."""

import torch

from lpcam.prototypes.pool import DISCRIMINATIVE, IGNORED, OFF_OBJECT, ON_OBJECT, SHARED, FeaturePool, Reservoir, feature_tags


def test_reservoir_keeps_everything_under_the_cap():
    r = Reservoir(10, 2, torch.Generator().manual_seed(0))
    rows = torch.arange(12.0).view(6, 2)
    r.add(rows[:4], torch.arange(4))
    r.add(rows[4:], torch.arange(4, 6))
    assert torch.equal(r.rows, rows) and r.seen == 6 and r.tags.tolist() == list(range(6))


def test_reservoir_is_bounded_and_uniform():
    n, cap, trials = 200, 20, 400
    hits = torch.zeros(n)
    for t in range(trials):
        r = Reservoir(cap, 1, torch.Generator().manual_seed(t))
        for start in range(0, n, 37):  # uneven batches
            ids = torch.arange(start, min(n, start + 37))
            r.add(ids.float().view(-1, 1), ids)
        assert len(r.rows) == cap and r.seen == n
        assert r.tags.tolist() == r.rows.long().flatten().tolist()  # tags travel with their rows
        assert len(set(r.rows.flatten().tolist())) == cap  # no duplicates
        hits[r.rows.long().flatten()] += 1
    rate = hits / trials  # each item should be kept with probability cap / n = 0.1
    assert abs(rate.mean().item() - 0.1) < 1e-6
    assert rate[:50].mean().item() - rate[-50:].mean().item() < 0.03  # early items are not favoured
    assert rate.min() > 0.03 and rate.max() < 0.2


def test_reservoir_is_deterministic_for_a_seed():
    def sample(seed):
        r = Reservoir(5, 1, torch.Generator().manual_seed(seed))
        r.add(torch.arange(100.0).view(-1, 1))
        return r.rows.flatten().tolist()

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


def test_feature_tags_from_mask_and_parts():
    mask = torch.tensor([[2, 2], [0, 255]])
    parts = torch.tensor([[1, 2], [0, 0]])
    assert feature_tags(mask, parts, c=1).tolist() == [[DISCRIMINATIVE, SHARED], [OFF_OBJECT, IGNORED]]
    assert feature_tags(mask, torch.zeros_like(parts), c=1).tolist() == [[ON_OBJECT, ON_OBJECT], [OFF_OBJECT, IGNORED]]
    assert feature_tags(mask, parts, c=0).tolist() == [[OFF_OBJECT, OFF_OBJECT], [OFF_OBJECT, IGNORED]]


def test_pool_splits_by_cam_and_counts_halo():
    pool = FeaturePool(num_classes=2, dim=3, cap=100)
    feats = torch.arange(12.0).view(3, 2, 2)  # D=3 on a 2x2 grid
    is_fg = torch.tensor([[True, True], [False, False]])
    tags = torch.tensor([[SHARED, OFF_OBJECT], [OFF_OBJECT, IGNORED]])
    pool.add(1, feats, is_fg, tags)
    assert pool.fg[1].rows.tolist() == [[0.0, 4.0, 8.0], [1.0, 5.0, 9.0]]
    assert pool.fg[1].tags.tolist() == [SHARED, OFF_OBJECT] and pool.bg[1].tags.tolist() == [OFF_OBJECT, IGNORED]
    assert len(pool.bg[1].rows) == 2 and len(pool.fg[0].rows) == 0
    assert pool.halo_share(1) == 0.5  # one of two fg positions is off the object
    assert pool.halo_share(0) is None


def test_composition_names_each_centre_by_its_members_majority_tag():
    from lpcam.prototypes.clustering import composition

    tags = torch.tensor([SHARED, SHARED, OFF_OBJECT, DISCRIMINATIVE, OFF_OBJECT, OFF_OBJECT, IGNORED])
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 1])
    assert composition(tags, labels, torch.tensor([0, 1, 2])) == {"shared": 1, "discriminative": 1, "off_object": 1}
    assert composition(tags, labels, torch.tensor([2])) == {"off_object": 1}
    assert composition(tags, labels, torch.tensor([], dtype=torch.long)) == {}
