"""lpcam's vectorised LPCAM maps against a plain reference of the official map.

The reference below is written from the official code's ``make_lpcam`` (and the loader it uses),
one loop per image, class, scale and prototype, sharing nothing with lpcam but the classifier's
backbone: per scale, the 8-bit image is resized with PIL's bicubic filter (IRN's loader; scale 1
is the image itself), and the features of the rescaled image and of its mirror image (flipped
back) are summed; each class prototype gives a cosine-similarity map, their mean is the
foreground term; with context prototypes the map is ReLU(foreground − mean context similarity),
without them the foreground term alone; each scale's map is upsampled (bilinear) to the image's
size rounded up to a multiple of 16 and cropped to the image (IRN's ``strided_up_size``), the
scales are averaged and the result divided by its maximum. The fixture's 37 × 50 images are no
multiples of 16, so the crop matters.

lpcam's maps are taken where the evaluation takes them, under the official protocol's
``evaluation.rescale=pil_bicubic`` and ``evaluation.upsample=padded``:
:meth:`CamEvaluator.maps`, which runs the methods :func:`build_methods` makes over one shared
multi-scale forward pass.

Two differences are expected and asserted as such, not hidden by the tolerance:
- lpcam divides by ``max + 1e-5`` (IRN's normalisation, shared with CAM), the official code by the
  max alone, so lpcam's map is the reference times ``max / (max + 1e-5)``;
- a map that is zero everywhere (every position closer to the context than to the class) is
  0 / 0 = NaN in the official code, zeros in lpcam.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lpcam.cams.aggregation import official
from lpcam.models.backbones import small_resnet
from lpcam.models.classifier import Classifier
from lpcam.prototypes.store import Prototypes
from lpcam.stages.evaluation import CamEvaluator, EvaluationSettings

SCALES = (1.0, 0.5, 1.5, 2.0)  # the official code's, hard-coded there
EPS = 1e-5  # lpcam's (IRN's) max-normalisation epsilon


# ------------------------------------------------------------------ the reference, loop by loop


def reference_features(extract, image: Tensor, scale: float) -> Tensor:
    """(D, h, w): features of one image at one scale plus those of its mirror image, flipped back."""
    h, w = image.shape[-2:]
    x = image[None]
    if scale != 1.0:  # IRN's pil_rescale(img, scale, order=3) of the 8-bit image
        pixels = (image.permute(1, 2, 0) * 255).round().byte().numpy()
        resized = Image.fromarray(pixels).resize((int(np.round(w * scale)), int(np.round(h * scale))), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    plain = extract(x)[0]
    mirrored = extract(x.flip(-1))[0].flip(-1)
    return plain + mirrored


def cosine_map(feature: Tensor, prototype: Tensor) -> Tensor:
    """(h, w) cosine similarity of each position's feature to one prototype, as F.cosine_similarity."""
    return F.cosine_similarity(feature, prototype[:, None, None].expand_as(feature), dim=0)


def reference_unnormalised(
    extract, image: Tensor, class_protos: Tensor, context_protos: Tensor, use_context: bool = True
) -> Tensor:
    """(H, W) official LPCAM map of one class in one image before the division by its max
    (LPCAM-F with ``use_context=False``)."""
    size = image.shape[-2:]
    upsampled = []
    for scale in SCALES:
        feature = reference_features(extract, image, scale)
        fg = torch.stack([cosine_map(feature, p) for p in class_protos]).mean(0)
        att = fg
        if use_context and len(context_protos) > 0:
            context = torch.stack([cosine_map(feature, q) for q in context_protos]).mean(0)
            att = F.relu(fg - context)
        padded = (-(-size[0] // 16) * 16, -(-size[1] // 16) * 16)  # strided_up_size(size, 16)
        up = F.interpolate(att[None, None], size=padded, mode="bilinear", align_corners=False)[0, 0]
        upsampled.append(up[: size[0], : size[1]])
    return torch.stack(upsampled).mean(0)


def reference_lpcam(*args, **kwargs) -> Tensor:
    """The official map: divided by its max, without epsilon (an all-zero map gives NaN)."""
    mean = reference_unnormalised(*args, **kwargs)
    return mean / mean.max()


# ------------------------------------------------------------------ the fixture


@pytest.fixture(scope="module")
def fixture():
    """A tiny random classifier (output stride 4, 16 channels), two 37 × 50 8-bit images with labels,
    and random prototypes for four classes: two with context prototypes, one without, and one
    whose context prototypes equal its class prototypes (its official map is 0 / 0)."""
    torch.manual_seed(0)
    model = Classifier(small_resnet(widths=(8, 16, 16), stem_width=8), num_classes=4).eval()
    images = (torch.rand(2, 3, 37, 50) * 255).round() / 255  # as read from 8-bit files
    labels = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    d = model.backbone.out_channels
    # non-negative like the centres of ReLU features, with a varied spread so maps are not flat
    protos = [torch.rand(n, d) ** 3 for n in (3, 2, 4, 2)]
    context = [torch.rand(2, d) ** 3, torch.rand(3, d) ** 3, torch.zeros(0, d), protos[3].clone()]
    prototypes = Prototypes(protos, context)
    settings = EvaluationSettings(scales=SCALES, flip=True, rescale="pil_bicubic", upsample="padded",
                                  compare_rules=("fg_only",), num_examples=0)  # fmt: skip
    evaluator = CamEvaluator(model, prototypes, ["a", "b", "c", "d"], official, settings)
    with torch.no_grad():
        maps = evaluator.maps(images, labels)
    return model, images, labels, prototypes, maps


# ------------------------------------------------------------------ the comparisons


@pytest.mark.parametrize("rule, use_context", [("lpcam_official", True), ("lpcam_fg_only", False)])
def test_vectorised_maps_equal_the_loop_per_prototype_reference(fixture, rule, use_context):
    model, images, labels, prototypes, maps = fixture
    compared = 0
    with torch.no_grad():
        for b in range(len(images)):
            for c in torch.nonzero(labels[b]).flatten().tolist():
                if c == 3 and use_context:
                    continue  # the 0 / 0 class: its own test below
                raw = reference_unnormalised(model.features, images[b], prototypes.class_protos[c],
                                             prototypes.context_protos[c], use_context)  # fmt: skip
                ref = raw / raw.max()
                assert torch.isfinite(ref).all() and ref.min() < 0.9  # a map with structure, not a constant
                # lpcam sums the scales (a constant factor against their mean) and divides by the
                # sum's max + 1e-5: the reference times max / (max + 1e-5), to float rounding
                total_max = raw.max() * len(SCALES)
                torch.testing.assert_close(maps[rule][b, c], ref * total_max / (total_max + EPS), rtol=0, atol=2e-6)
                # the epsilon alone: a difference below 1e-5 / max
                assert (maps[rule][b, c] - ref).abs().max() <= EPS / total_max + 2e-6
                compared += 1
    assert compared == (4 if use_context else 5)  # (image, labelled class) pairs: 3 + 2, less the 0 / 0 one


def test_classes_with_and_without_context_are_both_covered(fixture):
    _, _, labels, prototypes, _ = fixture
    labelled = set(torch.nonzero(labels)[:, 1].tolist())
    with_context = {c for c in labelled if len(prototypes.context_protos[c]) and c != 3}
    without_context = {c for c in labelled if not len(prototypes.context_protos[c])}
    assert with_context and without_context


def test_an_all_zero_map_is_nan_in_the_official_code_and_zero_in_lpcam(fixture):
    model, images, _, prototypes, maps = fixture
    with torch.no_grad():
        ref = reference_lpcam(model.features, images[0], prototypes.class_protos[3], prototypes.context_protos[3])
    assert torch.isnan(ref).all()  # 0 / 0
    assert torch.equal(maps["lpcam_official"][0, 3], torch.zeros_like(ref))
    assert maps["lpcam_fg_only"][0, 3].max() > 0.99  # LPCAM-F ignores the context: an ordinary map
