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


# ------------------------------------------------------------------ the official rescale and upsampling


def test_pil_bicubic_rescale_is_pils_bicubic_on_the_8bit_image():
    """IRN's loader (and so the official LPCAM code) resizes the uint8 image with PIL's bicubic
    filter before normalising; lpcam's images are uint8 / 255, so it gets the same pixels back."""
    import numpy as np
    from PIL import Image

    from lpcam.cams.multiscale import rescale_images

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 37, 50, 3), dtype=np.uint8)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    for size in [(18, 25), (56, 75)]:  # shrinking (PIL antialiases) and enlarging
        ours = rescale_images(images, size, "pil_bicubic")
        for b in range(2):
            pil = np.asarray(Image.fromarray(pixels[b]).resize(size[::-1], Image.BICUBIC))
            assert torch.equal(ours[b], torch.from_numpy(pil.copy()).permute(2, 0, 1).float() / 255)
        bilinear = rescale_images(images, size, "bilinear")
        torch.testing.assert_close(bilinear, torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False))
        assert (ours - bilinear).abs().mean() > 1 / 255  # the two rules differ by more than rounding


def test_multiscale_features_rescale_only_the_other_scales():
    from lpcam.cams.multiscale import rescale_images

    conv = torch.nn.Conv2d(3, 4, 1)
    images = (torch.rand(2, 3, 20, 30) * 255).round() / 255
    with torch.no_grad():
        views = multiscale_features(conv, images, scales=(1.0, 0.5), flip=False, rescale="pil_bicubic")
        torch.testing.assert_close(views[0][0], conv(images))
        torch.testing.assert_close(views[1][0], conv(rescale_images(images, (10, 15), "pil_bicubic")))
        bilinear = multiscale_features(conv, images, scales=(1.0, 0.5), flip=False)
    assert not torch.allclose(views[1], bilinear[1])


def test_padded_upsampling_is_irns_strided_up_size_then_crop():
    import torch.nn.functional as F

    from lpcam.cams.multiscale import upsampled

    maps = torch.rand(1, 2, 5, 7)
    out = upsampled(maps, (37, 50), "padded")  # rounded up to 48 x 64, then the top-left 37 x 50
    torch.testing.assert_close(out, F.interpolate(maps, size=(48, 64), mode="bilinear", align_corners=False)[..., :37, :50])
    assert not torch.allclose(out, upsampled(maps, (37, 50), "direct"))
    torch.testing.assert_close(upsampled(maps, (32, 48), "padded"), upsampled(maps, (32, 48), "direct"))  # multiples of 16


def test_a_methods_maps_upsample_padded_at_the_images_size_only():
    """IRN pads ``high_res`` (the image's size) but resizes its stride-4 ``cam`` straight."""
    from lpcam.cams.base import Batch
    from lpcam.cams.cam import Cam
    from lpcam.cams.multiscale import multiscale_features as views_of

    conv = torch.nn.Conv2d(3, 4, 1, stride=4)
    classifier = type("C", (), {"weights": torch.rand(2, 4)})()
    images, labels = torch.rand(1, 3, 37, 50), torch.ones(1, 2)
    padded = Batch(images, labels, conv, (1.0, 0.5), True, "bilinear", "padded")
    direct = Batch(images, labels, conv, (1.0, 0.5), True, "bilinear", "direct")
    with torch.no_grad():
        feats = views_of(conv, images, (1.0, 0.5), True)
        torch.testing.assert_close(Cam(classifier).maps(padded), cam_maps(feats, classifier.weights, (37, 50), "padded"))
        assert not torch.allclose(Cam(classifier).maps(padded), Cam(classifier).maps(direct))
        torch.testing.assert_close(Cam(classifier).maps(padded, (10, 13)), Cam(classifier).maps(direct, (10, 13)))
