"""Tests for lpcam.prototypes.kmeans: recovery, cosine semantics, determinism, chunking, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lpcam.prototypes.kmeans as km
from lpcam.prototypes.kmeans import KMeansResult, kmeans


def _blobs(n_per: int = 100, k: int = 3, dim: int = 8, std: float = 0.5, seed: int = 0):
    """Well-separated Gaussian blobs with means 10 * e_i (distinct directions, so cosine separates them too)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(k, dim)
    means[torch.arange(k), torch.arange(k)] = 10.0
    truth = torch.arange(k).repeat_interleave(n_per)
    x = means[truth] + std * torch.randn(k * n_per, dim, generator=g)
    perm = torch.randperm(k * n_per, generator=g)
    return x[perm], truth[perm], means


def _match(res: KMeansResult, truth: torch.Tensor, k: int) -> torch.Tensor:
    """Map each true blob to the predicted cluster; assert it is a bijection and labels agree exactly."""
    mapping = torch.tensor([int(torch.mode(res.labels[truth == t]).values) for t in range(k)])
    assert sorted(mapping.tolist()) == list(range(k))
    assert torch.equal(mapping[truth], res.labels)
    return mapping


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_recovers_blobs(metric):
    x, truth, means = _blobs()
    res = kmeans(x, 3, metric=metric, seed=0)
    mapping = _match(res, truth, 3)
    assert res.converged is True
    assert 1 <= res.iterations < 100
    assert res.centres.dtype == torch.float32 and res.centres.shape == (3, 8)
    assert res.labels.dtype == torch.long
    assert res.counts.tolist() == [100, 100, 100]
    # Centres are the raw means: exactly the empirical blob means, and close to the true ones.
    for t in range(3):
        emp = x[truth == t].mean(dim=0)
        torch.testing.assert_close(res.centres[mapping[t]], emp, atol=1e-5, rtol=1e-5)
        assert float((res.centres[mapping[t]] - means[t]).norm()) < 0.25


def test_euclidean_inertia_matches_definition_and_sklearn():
    from sklearn.cluster import KMeans

    x, _, _ = _blobs(n_per=120, k=5, dim=8, std=1.0, seed=3)
    res = kmeans(x, 5, metric="euclidean", seed=0)
    # Reported inertia = sum of squared distances to own centre.
    direct = ((x.double() - res.centres.double()[res.labels]) ** 2).sum().item()
    assert res.inertia == pytest.approx(direct, rel=1e-5)
    sk = KMeans(n_clusters=5, n_init=1, random_state=0).fit(x.numpy().astype(np.float64))
    assert res.inertia <= sk.inertia_ * 1.01
    assert res.inertia == pytest.approx(sk.inertia_, rel=0.01)


def test_cosine_groups_by_direction_but_centre_is_raw_mean():
    u = torch.tensor([1.0, 0.0, 0.0])
    v = torch.tensor([0.0, 0.6, 0.8])
    x = torch.stack([5 * u, 0.5 * u, 5 * v, 0.5 * v, 2 * u])
    res = kmeans(x, 2, metric="cosine", seed=0)
    assert res.labels[0] == res.labels[1] == res.labels[4]
    assert res.labels[2] == res.labels[3]
    assert res.labels[0] != res.labels[2]
    cu, cv = res.centres[res.labels[0]], res.centres[res.labels[2]]
    # Raw means, not means of unit vectors: (5 + 0.5 + 2) / 3 = 2.5 along u; 2.75 along v.
    torch.testing.assert_close(cu, torch.tensor([2.5, 0.0, 0.0]))
    torch.testing.assert_close(cv, torch.tensor([0.0, 1.65, 2.2]))
    assert sorted(res.counts.tolist()) == [2, 3]
    assert res.inertia == pytest.approx(0.0, abs=1e-5)  # every point is parallel to its centre
    assert res.converged


def test_cosine_inertia_is_sum_of_one_minus_cos():
    x, _, _ = _blobs(seed=5)
    res = kmeans(x, 3, metric="cosine", seed=2)
    cos = torch.nn.functional.cosine_similarity(x, res.centres[res.labels], dim=1)
    assert res.inertia == pytest.approx(float((1 - cos).sum()), rel=1e-4, abs=1e-4)


def test_deterministic_same_seed_and_other_seed_still_recovers():
    x, truth, _ = _blobs(seed=1)
    a = kmeans(x, 3, seed=7)
    b = kmeans(x, 3, seed=7)
    assert torch.equal(a.centres, b.centres)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.counts, b.counts)
    assert a.iterations == b.iterations and a.inertia == b.inertia
    c = kmeans(x, 3, seed=8)
    _match(c, truth, 3)
    # Seeding matters: the initial draw differs between seeds (cluster numbering may too).
    g7, g8 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)
    assert not torch.equal(km._kmeans_plus_plus(_rows(x), 3, "cosine", g7), km._kmeans_plus_plus(_rows(x), 3, "cosine", g8))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_chunking_does_not_change_result(metric):
    x, _, _ = _blobs(n_per=50, k=4, dim=6, std=2.0, seed=2)
    small = kmeans(x, 4, metric=metric, seed=3, chunk_size=7)
    big = kmeans(x, 4, metric=metric, seed=3, chunk_size=100000)
    assert torch.equal(small.labels, big.labels)
    torch.testing.assert_close(small.centres, big.centres, atol=1e-6, rtol=0)
    assert small.iterations == big.iterations
    assert small.inertia == pytest.approx(big.inertia, rel=1e-6)


def test_default_chunks_hold_a_fixed_number_of_values_whatever_the_feature_size():
    assert [km.default_chunk_rows(d) for d in (128, 512, 2048, 1 << 23)] == [32768, 8192, 2048, 1]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_default_chunks_give_the_result_of_fixed_8192_row_chunks(metric):
    # 20,000 x 128 rows: one default chunk against three of 8192 rows (the earlier default). On the
    # machine where the rule was measured the centres were bit-identical; another BLAS may round a
    # row's product by where its chunk ends, so the centres are held to float32 rounding only.
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(8, 128, generator=g)[torch.randint(8, (20000,), generator=g)]
         + 1.5 * torch.randn(20000, 128, generator=g)).relu()  # fmt: skip
    by_size, fixed = kmeans(x, 12, metric=metric, seed=0), kmeans(x, 12, metric=metric, seed=0, chunk_size=8192)
    assert torch.equal(by_size.labels, fixed.labels) and by_size.iterations == fixed.iterations
    torch.testing.assert_close(by_size.centres, fixed.centres, rtol=0, atol=1e-6)
    assert by_size.inertia == pytest.approx(fixed.inertia, rel=1e-12)  # float64 sums grouped by chunk


def test_fewer_points_than_k_reduces_k():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    res = kmeans(x, 12, seed=0)
    assert res.centres.shape == (3, 2)
    assert res.counts.tolist() == [1, 1, 1]
    assert sorted(res.labels.tolist()) == [0, 1, 2]
    torch.testing.assert_close(res.centres[res.labels], x)
    assert res.inertia == pytest.approx(0.0, abs=1e-6)


def test_single_point():
    res = kmeans(torch.tensor([[3.0, 4.0]]), 1)
    torch.testing.assert_close(res.centres, torch.tensor([[3.0, 4.0]]))
    assert res.labels.tolist() == [0] and res.converged


def test_empty_input_raises():
    with pytest.raises(ValueError, match="empty"):
        kmeans(torch.empty(0, 4), 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_raises(bad):
    x = torch.randn(20, 4)
    x[13, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        kmeans(x, 3, chunk_size=5)


def test_bad_arguments_raise():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError):
        kmeans(x, 0)
    with pytest.raises(ValueError):
        kmeans(x, 2, metric="manhattan")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        kmeans(torch.randn(10), 2)


def test_empty_cluster_reseeded_with_duplicates(monkeypatch):
    # Two distinct points repeated, k=3: k-means++ must place a duplicate centre, which
    # loses every tie and comes out empty, so re-seeding is exercised.
    p, q = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    x = torch.stack([p] * 5 + [q] * 5)
    calls = []
    original = km._reseed_empty

    def spy(*args):
        calls.append(int((args[4] == 0).sum()))
        return original(*args)

    monkeypatch.setattr(km, "_reseed_empty", spy)
    res = kmeans(x, 3, metric="euclidean", seed=0)
    assert calls and calls[0] == 1
    assert (res.counts > 0).all() and int(res.counts.sum()) == 10
    # Every centre is one of the two points, both points are represented, and points
    # sharing a label share a value.
    for c in res.centres:
        assert torch.equal(c, p) or torch.equal(c, q)
    torch.testing.assert_close(res.centres[res.labels], x)
    assert res.inertia == pytest.approx(0.0, abs=1e-6)


def test_reseed_picks_farthest_point_and_moves_it():
    x = torch.tensor([[0.0], [1.0], [4.0], [10.0], [11.0]])
    labels = torch.tensor([0, 0, 0, 2, 2])
    # distances of each point to its (old) centre; point 2 is farthest in a cluster with > 1 members
    dist = torch.tensor([1.0, 0.5, 9.0, 0.25, 0.25])
    sums = torch.zeros(3, 1, dtype=torch.float64)
    sums.index_add_(0, labels, x.double())
    counts = torch.bincount(labels, minlength=3)
    km._reseed_empty(x, labels, dist, sums, counts)
    assert labels.tolist() == [0, 0, 1, 2, 2]
    assert counts.tolist() == [2, 1, 2]
    assert sums[:, 0].tolist() == [1.0, 4.0, 21.0]


def test_max_iter_cap_reports_not_converged():
    x, _, _ = _blobs(seed=4)
    res = kmeans(x, 3, metric="euclidean", max_iter=1, seed=0)
    assert res.iterations == 1
    assert res.converged is False
    # Still consistent: centres are the means of the labelled points.
    for j in range(3):
        torch.testing.assert_close(res.centres[j], x[res.labels == j].mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_other_dtypes_computed_in_float32(dtype):
    x, truth, _ = _blobs(seed=6)
    xd = x.to(dtype)
    res = kmeans(xd, 3, seed=0)
    assert res.centres.dtype == torch.float32
    mapping = _match(res, truth, 3)
    ref = xd.to(torch.float32)
    for t in range(3):
        torch.testing.assert_close(res.centres[mapping[t]], ref[truth == t].mean(0), atol=1e-4, rtol=1e-4)
    assert not xd.dtype == torch.float32  # input untouched


def _rows(x: torch.Tensor, chunk: int = 64) -> km._Rows:
    return km._Rows(x, chunk)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_incremental_sums_equal_a_full_recount(metric):
    # Sums updated by the moved rows only equal the sums recomputed from scratch (to float64
    # rounding), and so give the same float32 centres.
    x = torch.randn(3000, 16, generator=torch.Generator().manual_seed(0)).relu()
    rows = _rows(x, chunk=500)
    g = torch.Generator().manual_seed(1)
    first = km._kmeans_plus_plus(rows, 6, metric, g)
    labels, _, sums, counts = km._assign(rows, first, metric)
    centres = (sums / counts.unsqueeze(1)).float()
    moved_total = 0
    for _ in range(4):
        previous = labels.clone()
        labels, _, sums, counts = km._assign(rows, centres, metric, previous, sums)
        moved_total += int((labels != previous).sum())
        full = torch.zeros_like(sums).index_add_(0, labels, x.double())
        torch.testing.assert_close(sums, full, rtol=1e-12, atol=1e-9)
        assert torch.equal(counts, torch.bincount(labels, minlength=6))
        assert torch.equal((sums / counts.unsqueeze(1)).float(), (full / counts.unsqueeze(1)).float())
        centres = (sums / counts.unsqueeze(1)).float()
    assert moved_total > 0  # the updates were exercised


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_greedy_seeding_leaves_a_lower_potential(metric):
    # scikit-learn's greedy k-means++: each centre the best of 2 + ln k draws, so the potential
    # after seeding is lower on average than with one draw; reproducible; same k distinct points.
    x = torch.cat([torch.randn(400, 8, generator=torch.Generator().manual_seed(s)) + 4 * s for s in range(8)])
    rows = _rows(x, chunk=256)
    plain, greedy = [], []
    for seed in range(10):
        for trials, out in ((1, plain), (4, greedy)):
            c = km._kmeans_plus_plus(rows, 8, metric, torch.Generator().manual_seed(seed), trials)
            out.append(float(km._dist_to_many(rows, c, metric).min(dim=1).values.double().sum()))
            assert len({tuple(r.tolist()) for r in c}) == 8
    assert sum(greedy) < sum(plain)
    again = km._kmeans_plus_plus(rows, 8, metric, torch.Generator().manual_seed(3), 4)
    assert torch.equal(again, km._kmeans_plus_plus(rows, 8, metric, torch.Generator().manual_seed(3), 4))
    res = kmeans(x, 8, metric=metric, init="greedy", seed=0)
    assert res.converged and (res.counts > 0).all()


def test_init_sample_seeds_on_a_uniform_sample_and_lloyd_sees_every_row(monkeypatch):
    # The seeding gets init_sample distinct rows of x (drawn with the seed, reproducibly); the
    # Lloyd iterations still assign every row, so the blobs are recovered exactly.
    x, truth, _ = _blobs(n_per=200, seed=7)
    seen: list[torch.Tensor] = []
    real = km._kmeans_plus_plus

    def spy(rows, k, metric, gen, trials=1):
        seen.append(rows.x.clone())
        return real(rows, k, metric, gen, trials)

    monkeypatch.setattr(km, "_kmeans_plus_plus", spy)
    for init in ("kmeans++", "greedy"):
        res = kmeans(x, 3, init=init, init_sample=50, seed=1)
        _match(res, truth, 3)
        assert res.labels.shape == (600,)
        again = kmeans(x, 3, init=init, init_sample=50, seed=1)
        assert torch.equal(res.centres, again.centres) and torch.equal(res.labels, again.labels)
    sample = seen[0]
    assert sample.shape == (50, 8)
    as_rows = {tuple(r.tolist()) for r in x}
    assert len({tuple(r.tolist()) for r in sample}) == 50 and all(tuple(r.tolist()) in as_rows for r in sample)
    assert torch.equal(seen[0], seen[1])  # the same seed draws the same sample
    kmeans(x, 3, init_sample=50, seed=2)
    assert not torch.equal(seen[-1], seen[0])  # another seed, another sample


def test_init_sample_of_every_row_changes_nothing():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(3)).relu()
    for init in ("kmeans++", "greedy"):
        plain = kmeans(x, 5, init=init, seed=4)
        for sample in (500, 10_000):
            same = kmeans(x, 5, init=init, seed=4, init_sample=sample)
            assert torch.equal(plain.centres, same.centres) and torch.equal(plain.labels, same.labels)
    with pytest.raises(ValueError, match="init_sample must be a whole number of rows >= k"):
        kmeans(x, 5, init_sample=4)
    with pytest.raises(ValueError, match="init_sample"):
        kmeans(x, 5, init_sample=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_reused_conversion_buffers_give_the_float32_result(dtype):
    # Chunks of a float16/float64 input are converted into one reused float32 buffer, and rows into
    # one reused float64 buffer for the sums: with many chunks (the last one shorter), the result
    # equals clustering the converted input itself, whose chunks need no conversion.
    xd = (torch.randn(2050, 24, generator=torch.Generator().manual_seed(5)) * 3).relu().to(dtype)
    for metric in ("cosine", "euclidean"):
        a = kmeans(xd, 7, metric=metric, chunk_size=256, seed=0)
        b = kmeans(xd.to(torch.float32), 7, metric=metric, chunk_size=256, seed=0)
        assert torch.equal(a.centres, b.centres) and torch.equal(a.labels, b.labels)
        assert a.iterations == b.iterations > 1 and a.inertia == b.inertia


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 4, 6, 12, 16, 20])
def test_padded_product_gives_the_distances_of_the_centres_alone(metric: str, k: int) -> None:
    """The centre matrix of the distance product is padded with zero rows for speed; the distances
    must be those of the k centres only, computed one centre at a time (a zero row must never win,
    and for the Euclidean metric a padded column would be the row's squared norm: often the minimum)."""
    g = torch.Generator().manual_seed(k)
    x = torch.rand(300, 24, generator=g) + 0.1
    centres = torch.rand(k, 24, generator=g) * 3
    rows = km._Rows(x, chunk_size=128)
    got = km._dist_to_many(rows, centres, metric)
    assert got.shape == (300, k)
    assert km._padded_rows(k) >= k
    one_at_a_time = torch.cat([km._dist_to_many(rows, centres[j : j + 1], metric) for j in range(k)], dim=1)
    torch.testing.assert_close(got, one_at_a_time, rtol=1e-5, atol=1e-5)
    if metric == "cosine":
        expected = 1 - torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(centres, dim=1).T
    else:
        expected = torch.cdist(x.double(), centres.double()).square().float()
    torch.testing.assert_close(got, expected.clamp_min(0), rtol=1e-4, atol=1e-4)
    labels, _, _, counts = km._assign(rows, centres, metric)
    assert int(labels.max()) < k and counts.shape == (k,) and int(counts.sum()) == 300
