"""IRN's random walk (``make_sem_seg_labels``) in memory linear in the number of positions.

IRN turns seeds into pseudo masks by propagating each class's CAM over a class-boundary map
(Ahn, Cho & Kwak, CVPR 2019). Between two positions i and j at most ``radius`` apart (one of the
offsets :func:`offsets` lists), the affinity is one minus the strongest boundary on the way:

    a_ij = 1 - max_{p on the path from i to j} B(p)         a_ii = 1,  a_ij = 0 beyond the image

The transition matrix is ``T = A^β`` with each column normalised to sum 1, and the walk is
``x · T^(2^t)`` on the boundary-suppressed CAMs ``x = cam · (1 - B)``, where IRN computes
``T^(2^t)`` by squaring a dense (positions × positions) matrix ``t`` times: 1.4 · 10⁸ entries for one
VOC image at stride 4, its cube in time. Here one step ``y ← y · T`` is a weighted sum over the
69 neighbours of each position (a stencil over its 9 × 9 window, one ``unfold``),
``y_j = Σ_i y_i a_ij^β / Σ_i a_ij^β``, repeated 2^t times: the same product in exact arithmetic,
in memory O(C · positions · 81), all classes at once, on whatever device the tensors are on.

The path from i to j is the set of grid points of the bounding box of the offset whose distance
to the segment's line is below one (IRN's definition), so a thin boundary between two positions
always lies on the path.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

Offset = tuple[int, int]


@lru_cache(maxsize=None)
def offsets(radius: int = 5) -> tuple[tuple[Offset, tuple[Offset, ...]], ...]:
    """The half-plane of offsets (dy, dx) within ``radius`` (dy > 0, or dy = 0 and dx > 0), each
    with the points of its path (the origin and the offset included); the other half is the same
    pairs seen from the other end. IRN's radius 5 gives 34 offsets."""
    half = [(0, dx) for dx in range(1, radius)]
    half += [(dy, dx) for dy in range(1, radius) for dx in range(-radius + 1, radius) if dy * dy + dx * dx < radius * radius]
    out = []
    for dy, dx in half:
        length_sq = dy * dy + dx * dx
        ys = range(min(0, dy), max(0, dy) + 1)
        xs = range(min(0, dx), max(0, dx) + 1)
        path = tuple((y, x) for y in ys for x in xs if (dy * x - dx * y) ** 2 < length_sq)
        out.append(((dy, dx), path))
    return tuple(out)


def shifted(x: Tensor, dy: int, dx: int, fill: float) -> Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, ``fill`` where that is outside the image."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (max(0, -dx), max(0, dx), max(0, -dy), max(0, dy)), value=fill)
    top, left = max(0, dy), max(0, dx)
    return padded[..., top : top + h, left : left + w]


def affinities(boundary: Tensor, radius: int = 5) -> Tensor:
    """``(O, H, W)``: for each half-plane offset o = (dy, dx), the affinity between position
    (y, x) and (y + dy, x + dx), zero where the partner is outside the image."""
    half = offsets(radius)
    points = {point for _, path in half for point in path}  # paths share points: 162 for 2,134 path steps at radius 10
    moved = {(py, px): shifted(boundary, py, px, fill=1.0) for py, px in points}
    return torch.stack([1.0 - torch.stack([moved[point] for point in path]).amax(dim=0) for _, path in half])


def random_walk(cams: Tensor, boundary: Tensor, beta: float = 10.0, exp_times: int = 8, radius: int = 5) -> Tensor:
    """``cams`` (C, H, W) walked over ``boundary`` (H, W, values in [0, 1]) as IRN's
    ``propagate_to_edge``: ``(cams · (1 - B)) · T^(2^exp_times)``, returned as (C, H, W)."""
    if cams.shape[-2:] != boundary.shape[-2:]:
        raise ValueError(f"cams {tuple(cams.shape)} and boundary {tuple(boundary.shape)} differ in size")
    half = affinities(boundary, radius).pow(beta)  # (O, H, W): a_{p, p+o}^β
    pairs = [(0, 0, torch.ones_like(boundary))]  # a_pp = 1
    for ((dy, dx), _), a in zip(offsets(radius), half):
        pairs.append((dy, dx, a))  # from p + o into p: a_{p+o, p} = a_{p, p+o}
        pairs.append((-dy, -dx, shifted(a, -dy, -dx, fill=0.0)))  # from p - o into p: a_{p-o, p}
    # T's columns as a (k*k, H*W) stencil over the k x k window around each position (unused
    # window cells weigh 0), so that one step is one unfold and one weighted sum
    k = 2 * (radius - 1) + 1
    weights = boundary.new_zeros(k * k, *boundary.shape)
    for dy, dx, w in pairs:
        weights[(dy + radius - 1) * k + (dx + radius - 1)] = w
    weights = (weights / weights.sum(dim=0, keepdim=True)).flatten(1)  # the columns of T sum to 1
    c, (h, w) = cams.shape[0], cams.shape[-2:]
    y = cams * (1.0 - boundary)
    for _ in range(2**exp_times):
        window = F.unfold(y[None], k, padding=radius - 1).view(c, k * k, h * w)  # zeros beyond the image
        y = (window * weights).sum(dim=1).view(c, h, w)
    return y


def pseudo_mask(
    cams: Tensor,
    keys: Tensor,
    boundary: Tensor,
    size: tuple[int, int],
    bg_threshold: float = 0.25,
    beta: float = 10.0,
    exp_times: int = 8,
    radius: int = 5,
    stride: int = 4,
) -> Tensor:
    """IRN's semantic pseudo mask of one image: the walked CAMs of its classes ``keys`` (VOC
    class ids from 0, as in IRN's cam files), upsampled ``stride``× (bilinear), cropped to
    ``size`` (H, W), divided by their maximum, a background plane at ``bg_threshold`` (IRN's
    ``sem_seg_bg_thres`` 0.25; the official LPCAM code 0.35), argmax → class ids (0 background,
    ``keys + 1`` for the classes)."""
    walked = random_walk(cams, boundary, beta, exp_times, radius)
    up = F.interpolate(walked[None], scale_factor=stride, mode="bilinear", align_corners=False)[0, :, : size[0], : size[1]]
    up = up / up.max()
    scores = torch.cat([torch.full_like(up[:1], bg_threshold), up])
    ids = torch.cat([torch.zeros(1, dtype=torch.long, device=keys.device), keys.long() + 1])
    return ids[scores.argmax(dim=0)]
