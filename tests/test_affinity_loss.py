"""IRN's affinity loss: the pair labels of IR labels, the loss's value, and that minimising it
draws the class boundary where the labels change."""

from __future__ import annotations

import math

import torch

from lpcam.refine.affinity_loss import IGNORE, affinity_loss, pair_labels
from lpcam.refine.random_walk import offsets


def test_pairs_are_positive_within_a_label_negative_across_and_unlabelled_at_255_or_beyond_the_image():
    labels = torch.tensor([[0, 0, 3, IGNORE]])
    pairs = pair_labels(labels, radius=2)
    right = [i for i, (o, _) in enumerate(offsets(2)) if o == (0, 1)][0]
    assert pairs.bg_pos[right, 0].tolist() == [True, False, False, False]  # (0,0)-(0,1) both background
    assert pairs.neg[right, 0].tolist() == [False, True, False, False]  # background next to class 3
    assert not pairs.fg_pos.any()  # no two class-3 positions
    assert not (pairs.bg_pos | pairs.fg_pos | pairs.neg)[:, 0, 3].any()  # 255: no pair
    below = [i for i, (o, _) in enumerate(offsets(2)) if o == (1, 0)][0]
    assert not (pairs.bg_pos | pairs.fg_pos | pairs.neg)[below].any()  # the partner is beyond the image


def test_the_loss_is_irns_weighted_mean_of_log_terms():
    labels = torch.tensor([[0, 0, 3]])
    boundary = torch.tensor([[0.1, 0.2, 0.3]])
    # radius 2, one row: only the right neighbour exists; pairs (0,1) bg-bg and (1,2) bg-3
    a_bg = 1 - max(0.1, 0.2)
    a_neg = 1 - max(0.2, 0.3)
    want = ((-math.log(a_bg + 1e-5)) / 2 + 0 / 2 + (-math.log(1 + 1e-5 - a_neg))) / 2
    got = affinity_loss(boundary, labels, radius=2).item()
    assert abs(got - want) < 1e-4  # the empty fg term contributes 0 / (0 + 1e-5)


def test_minimising_it_puts_the_boundary_where_the_labels_change():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, :, 8:] = 12
    labels[:, :, 7:9] = IGNORE  # IR labels leave a strip around the object's edge unsure
    logits = torch.zeros(1, 16, 16, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(150):
        opt.zero_grad()
        loss = affinity_loss(torch.sigmoid(logits), labels, radius=5)
        loss.backward()
        opt.step()
    b = torch.sigmoid(logits.detach())[0]
    assert b[:, 7:9].mean() > 0.5 > b[:, :4].mean()  # high in the unsure strip the pairs cross, low inside
    assert b[:, 12:].mean() < 0.5
