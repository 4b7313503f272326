"""IRN's random walk: lpcam's memory-linear walk against the dense computation IRN does
(``propagate_to_edge``: the full transition matrix, squared ``exp_times`` times), written here
from its definition, on small images."""

from __future__ import annotations

import itertools

import pytest
import torch

from lpcam.refine.random_walk import affinities, offsets, pseudo_mask, random_walk


def path(dy: int, dx: int) -> set[tuple[int, int]]:
    """The grid points of the offset's bounding box within distance 1 of its line."""
    box = itertools.product(range(min(0, dy), max(0, dy) + 1), range(min(0, dx), max(0, dx) + 1))
    return {(y, x) for y, x in box if (dy * x - dx * y) ** 2 < dy * dy + dx * dx}


def dense_walk(cams: torch.Tensor, boundary: torch.Tensor, beta: float, exp_times: int, radius: int = 5) -> torch.Tensor:
    """IRN's dense algorithm: A (positions x positions), T = A^beta with unit column sums,
    T^(2^exp_times) by repeated squaring, then (cams * (1 - B)) @ T."""
    h, w = boundary.shape
    n = h * w
    a = torch.eye(n, dtype=torch.float64)
    for y, x in itertools.product(range(h), range(w)):
        for dy, dx in itertools.product(range(-radius + 1, radius), repeat=2):
            if (dy, dx) == (0, 0) or dy * dy + dx * dx >= radius * radius:
                continue
            ty, tx = y + dy, x + dx
            if not (0 <= ty < h and 0 <= tx < w):
                continue
            strongest = max(boundary[y + py, x + px].item() for py, px in path(dy, dx))
            a[y * w + x, ty * w + tx] = 1.0 - strongest
    t = a.pow(beta)
    t = t / t.sum(dim=0, keepdim=True)
    for _ in range(exp_times):
        t = t @ t
    x = (cams * (1 - boundary)).reshape(cams.shape[0], n)
    return (x @ t).reshape(cams.shape)


def test_the_neighbourhood_is_irns():
    half = offsets(5)
    assert len(half) == 34  # 4 along the row, 30 below it, within radius 5
    assert all(dy > 0 or (dy == 0 and dx > 0) for (dy, dx), _ in half)
    for (dy, dx), points in half:
        assert set(points) == path(dy, dx) and (0, 0) in points and (dy, dx) in points


@pytest.mark.parametrize("size, beta, exp_times", [((9, 11), 10.0, 8), ((13, 7), 2.0, 4), ((6, 6), 10.0, 0)])
def test_the_walk_equals_the_dense_transition_matrix(size, beta, exp_times):
    g = torch.Generator().manual_seed(sum(size))
    boundary = torch.rand(size, generator=g, dtype=torch.float64) ** 3
    boundary[:, size[1] // 2] = 0.9  # a strong boundary across the image
    cams = torch.rand((3, *size), generator=g, dtype=torch.float64)
    got = random_walk(cams, boundary, beta=beta, exp_times=exp_times)
    want = dense_walk(cams, boundary, beta, exp_times)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_a_closed_boundary_stops_the_walk_and_a_free_field_spreads_it():
    boundary = torch.zeros(12, 12, dtype=torch.float64)
    boundary[:, 6] = 1.0  # a wall: affinity 0 across it
    cams = torch.zeros(1, 12, 12, dtype=torch.float64)
    cams[0, 5, 2] = 1.0
    walked = random_walk(cams, boundary, beta=10, exp_times=6)
    assert walked[0, :, 6:].abs().max() == 0  # nothing crosses the wall
    assert (walked[0, :, :6] > 0).all()  # it reaches every position on its side
    assert walked.max() <= cams.max()  # T's columns sum to one: each step averages into a position
    free = random_walk(cams, torch.zeros(12, 12, dtype=torch.float64), beta=10, exp_times=6)
    assert (free[0] > 0).all()


def test_affinities_are_zero_beyond_the_image_and_one_without_boundaries():
    a = affinities(torch.zeros(5, 6), radius=5)
    assert a.shape == (34, 5, 6)
    (dy, dx), _ = offsets(5)[0]  # (0, 1): the right neighbour
    assert a[0, :, :-1].eq(1).all() and a[0, :, -1].eq(0).all()


def test_the_pseudo_mask_is_irns_upsampled_argmax_with_a_background_plane():
    boundary = torch.zeros(6, 8)
    boundary[:, 4] = 1.0
    cams = torch.zeros(2, 6, 8)
    cams[0, :, :4] = 1.0  # class key 14 (person) on the left of the wall
    cams[1, :, 5:] = 0.2  # class key 11 (dog) weakly on the right
    keys = torch.tensor([14, 11])
    mask = pseudo_mask(cams, keys, boundary, size=(22, 30), bg_threshold=0.25, exp_times=3)
    assert mask.shape == (22, 30)
    assert set(mask.unique().tolist()) <= {0, 15, 12}
    assert (mask[:, :12] == 15).float().mean() > 0.9  # the strong class fills its side
    assert (mask[:, 22:] == 12).sum() == 0  # below the background plane after the division by the maximum
    assert (mask[:, 22:] == 0).all()
    low = pseudo_mask(cams, keys, boundary, size=(22, 30), bg_threshold=0.05, exp_times=3)
    assert (low[:, 22:] == 12).float().mean() > 0.9  # a lower threshold lets it through
