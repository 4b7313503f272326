"""Bounded, uniform, seeded feature sampling for the k-means."""

import torch

from lpcam.prototypes.pool import DISCRIMINATIVE, IGNORED, OFF_OBJECT, ON_OBJECT, SHARED, FeaturePool, feature_tags, pool_cap


def _reservoir(cap: int, seed: int = 0):
    """A pool of one class: its foreground side is the reservoir under test."""
    return FeaturePool(num_classes=1, dim=1, cap=cap, seed=seed).fg[0]


def test_reservoir_keeps_everything_under_the_cap():
    pool = FeaturePool(num_classes=1, dim=2, cap=10)
    r = pool.fg[0]
    rows = torch.arange(12.0).view(6, 2)
    r.add(rows[:4], torch.arange(4))
    r.add(rows[4:], torch.arange(4, 6))
    assert torch.equal(r.rows, rows) and r.seen == 6 and r.tags.tolist() == list(range(6))
    assert pool.bg[0].seen == 0 and len(pool.bg[0].rows) == 0


def test_reservoir_is_bounded_and_uniform():
    n, cap, trials = 200, 20, 400
    hits = torch.zeros(n)
    for t in range(trials):
        r = _reservoir(cap, seed=t)
        for start in range(0, n, 37):  # uneven batches
            ids = torch.arange(start, min(n, start + 37))
            r.add(ids.float().view(-1, 1), ids % 4)
        assert len(r.rows) == cap and r.seen == n
        assert r.tags.tolist() == (r.rows.long().flatten() % 4).tolist()  # tags travel with their rows
        assert len(set(r.rows.flatten().tolist())) == cap  # no duplicates
        hits[r.rows.long().flatten()] += 1
    rate = hits / trials  # each item should be kept with probability cap / n = 0.1
    assert abs(rate.mean().item() - 0.1) < 1e-6
    assert rate[:50].mean().item() - rate[-50:].mean().item() < 0.03  # early items are not favoured
    assert rate.min() > 0.03 and rate.max() < 0.2


def test_reservoir_is_deterministic_for_a_seed():
    def sample(seed):
        r = _reservoir(5, seed)
        r.add(torch.arange(100.0).view(-1, 1))
        return r.rows.flatten().tolist()

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


class SequentialPool:
    """The reference: Algorithm R one row at a time, one generator for all reservoirs, pairs added
    image by image, class by class, foreground then background (the loop the batch path replaces)."""

    def __init__(self, num_classes: int, cap: int, seed: int) -> None:
        self.cap, self.g = cap, torch.Generator().manual_seed(seed)
        self.rows = [[] for _ in range(2 * num_classes)]
        self.tags = [[] for _ in range(2 * num_classes)]
        self.seen = [0] * (2 * num_classes)
        self.halo, self.fg_known = [0] * num_classes, [0] * num_classes

    def offer(self, r: int, row: list, tag: int) -> None:
        if self.seen[r] < self.cap:
            self.rows[r].append(row)
            self.tags[r].append(tag)
        else:
            j = int(float(torch.rand(1, generator=self.g, dtype=torch.float64)) * (self.seen[r] + 1))
            if j < self.cap:
                self.rows[r][j], self.tags[r][j] = row, tag
        self.seen[r] += 1

    def add_batch(self, feats, labels, is_fg, tags) -> None:
        for b in range(len(feats)):
            for c in range(labels.shape[1]):
                if not labels[b, c]:
                    continue
                for side, keep in ((0, is_fg[b, c]), (1, ~is_fg[b, c])):
                    for pos in torch.nonzero(keep.flatten()).flatten().tolist():
                        tag = int(tags[b, c].flatten()[pos])
                        self.offer(2 * c + side, feats[b].flatten(1)[:, pos].tolist(), tag)
                        if side == 0:
                            self.halo[c] += tag == OFF_OBJECT
                            self.fg_known[c] += tag != IGNORED


def test_batch_sampling_equals_adding_each_image_and_class_in_turn():
    torch.manual_seed(0)
    classes, cap = 3, 7
    pool, reference = FeaturePool(classes, dim=2, cap=cap, seed=5), SequentialPool(classes, cap, seed=5)
    for _ in range(6):
        feats = torch.randn(4, 2, 3, 3)
        labels = torch.rand(4, classes) < 0.6
        is_fg = torch.rand(4, classes, 3, 3) < 0.3
        tags = torch.randint(-1, 4, (4, classes, 3, 3))
        pairs = torch.nonzero(labels)
        pool.add_batch(feats, pairs, is_fg[pairs[:, 0], pairs[:, 1]], tags[pairs[:, 0], pairs[:, 1]])
        reference.add_batch(feats, labels, is_fg, tags)
    for c in range(classes):
        for side, r in ((pool.fg[c], 2 * c), (pool.bg[c], 2 * c + 1)):
            assert side.rows.tolist() == reference.rows[r] and side.tags.tolist() == reference.tags[r]
            assert side.seen == reference.seen[r]
    assert max(reference.seen) > 3 * cap  # the draws were exercised
    assert pool.halo.tolist() == reference.halo and pool.fg_known.tolist() == reference.fg_known


def test_a_budget_sets_the_cap_for_any_number_of_classes_and_feature_size():
    # 80 classes x 2 sides of 2048-d half-precision features (+ a tag byte) in 4 GB
    cap = pool_cap(4096, 80, 2048, torch.float16, None)
    assert cap == 4096 * 2**20 // (160 * 4097)
    assert pool_cap(4096, 80, 2048, torch.float16, 1000) == 1000  # the per-class limit, when lower
    assert pool_cap(4096, 20, 2048, torch.float32, None) // 2 == pool_cap(4096, 40, 2048, torch.float32, None)
    pool = FeaturePool(80, 2048, cap, dtype=torch.float16)
    pool._reserve(cap)
    assert pool.nbytes <= 4096 * 2**20 < pool.nbytes + 160 * 4097


def test_storage_grows_with_what_was_sampled_not_with_the_cap():
    pool = FeaturePool(num_classes=2, dim=4, cap=10_000)
    pool.fg[1].add(torch.ones(3, 4))
    assert pool.capacity == 1024 and pool.fg[1].rows.shape == (3, 4)
    pool.fg[0].add(torch.ones(4, 4))
    assert pool.capacity == 1024 and pool.nbytes == 4 * 1024 * (4 * 4 + 1)  # one block of 4 reservoirs
    pool.bg[0].add(torch.ones(20_000, 4))
    assert pool.capacity == 10_000 and pool.bg[0].seen == 20_000 and len(pool.fg[0].rows) == 4
    assert len(pool.bg[0].rows) == 10_000 and pool.fg[1].rows.shape == (3, 4)


def test_feature_tags_from_mask_and_parts():
    mask = torch.tensor([[2, 2], [0, 255]])
    parts = torch.tensor([[1, 2], [0, 0]])
    assert feature_tags(mask, parts, c=1).tolist() == [[DISCRIMINATIVE, SHARED], [OFF_OBJECT, IGNORED]]
    assert feature_tags(mask, torch.zeros_like(parts), c=1).tolist() == [[ON_OBJECT, ON_OBJECT], [OFF_OBJECT, IGNORED]]
    assert feature_tags(mask, parts, c=0).tolist() == [[OFF_OBJECT, OFF_OBJECT], [OFF_OBJECT, IGNORED]]
    # a batch of (mask, class) pairs at once equals them one by one
    stacked = feature_tags(torch.stack([mask, mask]), torch.stack([parts, parts]), torch.tensor([1, 0]))
    assert stacked.tolist() == [feature_tags(mask, parts, 1).tolist(), feature_tags(mask, parts, 0).tolist()]


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
