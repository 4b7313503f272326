"""Prototype selection (the paper's score rule) against hand-computed scores."""

import math

import pytest
import torch

from lpcam.prototypes.selection import centre_scores, select_prototypes

W = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # two classes, D=2


def test_softmax_scores_of_raw_centres():
    centres = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    s = centre_scores(centres, W)
    e = math.exp(2) / (math.exp(2) + 1)
    torch.testing.assert_close(s, torch.tensor([[e, 1 - e], [0.5, 0.5]]))
    torch.testing.assert_close(centre_scores(centres, W, "sigmoid")[1], torch.sigmoid(torch.tensor([1.0, 1.0])))
    with pytest.raises(ValueError, match="lpcam.score"):
        centre_scores(centres, W, "nope")


def test_class_prototypes_pass_mu_fg_and_context_lies_between_bounds():
    fg = torch.tensor([[5.0, 0.0], [3.0, 0.0], [0.0, 0.0], [0.0, 5.0]])  # scores for class 0: .993, .953, .5, .007
    bg = torch.tensor([[5.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 2.0], [0.0, 5.0]])  # .993, .731, .5, .119, .007
    sel = select_prototypes(fg, bg, c=0, weights=W, mu_fg=0.9, mu_bg=0.9, context_min=0.05)
    assert sel.class_idx.tolist() == [0, 1]
    assert sel.context_idx.tolist() == [1, 2, 3]  # .993 is too class-like, .007 below 0.05


def test_best_centre_kept_when_none_passes_unless_disabled():
    fg = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # scores .731, .5: neither passes 0.9
    bg = torch.zeros(0, 2)
    sel = select_prototypes(fg, bg, 0, W)
    assert sel.class_idx.tolist() == [0]
    assert sel.context_idx.numel() == 0
    assert select_prototypes(fg, bg, 0, W, keep_best=False).class_idx.numel() == 0
