"""CAM and the multi-scale machinery against hand-computed cases."""

import torch

from lpcam.cams.cam import cam_maps
from lpcam.cams.multiscale import max_normalise, merge_scales, multiscale_features


def test_cam_is_relu_of_weighted_features_normalised_by_max():
    # one view, one image, D=2 channels on a 1x3 grid; two classes
    f = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]]).view(1, 1, 2, 1, 3)
    w = torch.tensor([[1.0, -1.0], [0.0, 0.5]])
    maps = cam_maps([f], w, size=(1, 3))
    # class 0: w·f = [1, 1, -3] -> relu [1, 1, 0] -> / (1 + 1e-5)
    # class 1: [0, 0.5, 1.5] -> / 1.5
    expected = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.5 / 1.5, 1.0]])
    torch.testing.assert_close(maps[0, :, 0], expected, atol=1e-4, rtol=0)


def test_cam_applies_relu_per_view_before_summing_views():
    # IRN sums ReLU(w·f) of the image and of its flip: a negative view must not cancel a positive one
    f = torch.tensor([[2.0], [-1.0]]).view(2, 1, 1, 1, 1)  # V=2 views, a single position
    f = torch.cat([f, torch.full_like(f, 1.0)], dim=-1)  # second position: both views +1
    w = torch.tensor([[1.0]])
    maps = cam_maps([f], w, size=(1, 2))
    # position 0: relu(2) + relu(-1) = 2; position 1: 1 + 1 = 2 -> both 2/2
    torch.testing.assert_close(maps[0, 0, 0], torch.tensor([1.0, 1.0]), atol=1e-4, rtol=0)


def test_scales_are_upsampled_and_summed_before_normalising():
    a = torch.tensor([[[[1.0, 0.0]]]])  # (B=1, C=1, 1, 2)
    b = torch.tensor([[[[0.0, 3.0]]]])
    merged = merge_scales([a, b], size=(1, 2))
    torch.testing.assert_close(merged, torch.tensor([[[[1 / 3, 1.0]]]]), atol=1e-4, rtol=0)


def test_max_normalise_per_image_and_class():
    m = torch.tensor([[[[2.0, 4.0]], [[0.0, 0.0]]]])
    out = max_normalise(m)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.5, 1.0]), atol=1e-4, rtol=0)
    assert torch.equal(out[0, 1], torch.zeros(1, 2))  # an all-zero map stays zero, no NaN


def test_multiscale_features_align_flipped_view_and_rescale():
    conv = torch.nn.Conv2d(3, 4, 1)  # a pointwise extractor commutes with flipping
    images = torch.rand(2, 3, 8, 10)
    views = multiscale_features(conv, images, scales=(1.0, 0.5), flip=True)
    assert [tuple(v.shape) for v in views] == [(2, 2, 4, 8, 10), (2, 2, 4, 4, 5)]
    with torch.no_grad():
        torch.testing.assert_close(views[0][0], views[0][1])  # the flipped view, flipped back, matches
        torch.testing.assert_close(views[0][0], conv(images))
    no_flip = multiscale_features(conv, images, scales=(1.0,), flip=False)
    assert no_flip[0].shape == (1, 2, 4, 8, 10)
