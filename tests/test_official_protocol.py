"""``lpcam=official_protocol``: the official code's protocol as a preset.

What it changes (the split CAM, the prototype images, the k-means, the caps, the fallback, the
seed threshold), that it runs, and that each new setting does what the official code does.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lpcam.cams.cam import cam_maps
from lpcam.cams.multiscale import multiscale_features
from lpcam.errors import InputError
from lpcam.models.backbones import small_resnet
from lpcam.models.classifier import Classifier
from lpcam.pipeline import build_settings, prototype_settings, run
from lpcam.prototypes.kmeans import kmeans
from lpcam.prototypes.settings import PrototypeSettings
from lpcam.stages.prototypes import split_cams
from tests.conftest import compose_config

SCALES = (1.0, 0.5, 1.5, 2.0)


# ------------------------------------------------------------------ the preset


def test_the_preset_states_the_official_protocol_and_nothing_else():
    default, official = compose_config([]), compose_config(["lpcam=official_protocol"])
    d, o = prototype_settings(default).as_dict(), prototype_settings(official).as_dict()
    assert {k: o[k] for k in o if o[k] != d[k]} == {
        "split_scales": list(SCALES), "split_resolution": "image",  # as_dict: JSON's lists
        "kmeans_rng": "numpy", "kmeans_max_iter": None, "keep_best": False,
    }  # fmt: skip
    # what lpcam's defaults took from the official code: IRN's rescale and upsampling, its k-means, the τ rule
    assert (d["kmeans_init"], d["kmeans_stop"], d["kmeans_tol"], d["max_features_per_class"], d["tau_ties"]) == (
        "random", "total", 5, None, "drop")  # fmt: skip
    e, f = build_settings(default.evaluation), build_settings(official.evaluation)
    assert (e.rescale, e.upsample) == (f.rescale, f.upsample) == ("pil_bicubic", "padded")
    assert (d["split_rescale"], d["split_upsample"]) == ("pil_bicubic", "padded")  # the split follows the evaluation
    assert o["split_flip"] is True and o["k"] == 12 and o["tau"] == 0.1  # as the default: VOC's official values
    # the seed-evaluation split (VOC train), not train_aug: lpcam's default too, and the preset's
    # under any dataset config
    assert official.dataset.prototype_split == "train" == official.dataset.eval_split == default.dataset.prototype_split
    coco = compose_config(["dataset=coco", "lpcam=official_protocol", "dataset.eval_split=val2014"])
    assert coco.dataset.prototype_split == "val2014"
    assert build_settings(official.evaluation).default_threshold == 0.3
    assert default.evaluation.default_threshold == 0.15
    assert official.lpcam.aggregation == default.lpcam.aggregation  # the official rule in both


def test_the_split_cam_follows_the_evaluations_views_and_later_choices_win():
    cfg = compose_config(["lpcam=official_protocol", "evaluation.scales=[1.0,0.5]", "evaluation.flip=false",
                          "evaluation.default_threshold=0.2", "lpcam/aggregation=max"])  # fmt: skip
    s = prototype_settings(cfg)
    assert s.split_scales == (1.0, 0.5) and s.split_flip is False
    assert cfg.evaluation.default_threshold == 0.2 and cfg.lpcam.aggregation._target_.endswith(".max")
    coco = compose_config(["lpcam=official_protocol", "experiment=coco_resnet50"])  # the experiment comes later
    c = prototype_settings(coco)
    assert (c.k, c.tau, c.mu_bg, c.context_min, c.keep_best) == (20, 0.25, 0.5, 0.0, True)  # COCO's official values
    assert c.split_resolution == "image" and coco.dataset.images_per_class == 100


def test_the_preset_runs_on_the_tiny_job(tiny):
    results = run(tiny("lpcam=official_protocol"))
    settings = results["prototypes"]["settings"]
    assert settings["split_resolution"] == "image" and tuple(settings["split_scales"]) == (1.0, 0.5)  # TINY's scales
    assert settings["kmeans_init"] == "random" and settings["kmeans_max_iter"] is None and settings["keep_best"] is False
    assert results["prototypes"]["images"]["split"] == "train"
    for method in ("cam", "lpcam_official", "lpcam_fg_only", "lpcam_max"):
        assert results["methods"][method]["default"]["threshold"] == 0.3  # the official seed threshold
        assert 0 <= results["methods"][method]["best"]["miou"] <= 100


# ------------------------------------------------------------------ the split CAM


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return Classifier(small_resnet(widths=(8, 16, 16), stem_width=8), num_classes=3).eval()


def direct_split_cam(model: Classifier, image: torch.Tensor, scales, grid) -> torch.Tensor:
    """(C, h, w) the official split, one image at a time: per scale ReLU(w_c · f) of the rescaled
    image plus that of its mirror image (flipped back), upsampled (bilinear) to the image and
    summed over scales, divided by max + 1e-5 (IRN's make_cam), then resized (nearest) to the grid."""
    h, w = image.shape[-2:]
    total = 0
    for s in scales:
        x = image[None] if s == 1 else F.interpolate(image[None], size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
        cam = F.relu(torch.einsum("dhw,cd->chw", model.features(x)[0], model.weights))
        cam = cam + F.relu(torch.einsum("dhw,cd->chw", model.features(x.flip(-1))[0].flip(-1), model.weights))
        total = total + F.interpolate(cam[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    total = total / (total.flatten(1).amax(1)[:, None, None] + 1e-5)
    return F.interpolate(total[None], size=grid, mode="nearest")[0]


def test_the_multiscale_split_equals_a_direct_computation_and_differs_from_the_default(classifier):
    torch.manual_seed(1)
    images = torch.rand(3, 3, 40, 56)
    official = PrototypeSettings(split_scales=SCALES, split_resolution="image", split_rescale="bilinear", split_upsample="direct")
    with torch.no_grad():
        feats, cams = split_cams(classifier, images, official)
        torch.testing.assert_close(feats, classifier.features(images))  # the pool's: scale 1, unflipped
        grid = feats.shape[-2:]
        for b in range(len(images)):
            torch.testing.assert_close(cams[b], direct_split_cam(classifier, images[b], SCALES, grid), rtol=0, atol=1e-5)
        default_feats, default_cams = split_cams(classifier, images, PrototypeSettings())
    assert torch.equal(default_feats, feats)
    fg, default_fg = cams > 0.1, default_cams > 0.1
    assert (fg != default_fg).float().mean() > 0.01  # another split of the same features


def test_the_default_split_is_unchanged(classifier):
    """The default: scale 1 with its flip, on the feature grid (the computation before the setting existed)."""
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats, cams = split_cams(classifier, images, PrototypeSettings())
        views = multiscale_features(classifier.features, images, scales=(1.0,), flip=True)
    assert torch.equal(feats, views[0][0]) and torch.equal(cams, cam_maps(views, classifier.weights, feats.shape[-2:]))


def test_a_split_without_scale_one_still_pools_the_scale_one_features(classifier):
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats, cams = split_cams(classifier, images, PrototypeSettings(split_scales=(0.5, 2.0), split_resolution="image"))
        assert torch.equal(feats, classifier.features(images)) and cams.shape[-2:] == feats.shape[-2:]


# ------------------------------------------------------------------ the official k-means


def blobs(n: int = 300, d: int = 8, k: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(k, d, generator=g) * 4
    return (centres[torch.arange(n) % k] + torch.randn(n, d, generator=g) * 0.5).relu()


def test_random_init_is_k_distinct_rows_and_seeded():
    x = blobs()
    one = kmeans(x, 4, init="random", max_iter=1, seed=3)
    assert torch.equal(one.centres, kmeans(x, 4, init="random", max_iter=1, seed=3).centres)
    start = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(3))[:4]]  # the initial centres
    labels = (F.normalize(x, dim=1) @ F.normalize(start, dim=1).T).argmax(1)  # one cosine assignment
    torch.testing.assert_close(one.centres, torch.stack([x[labels == j].mean(0) for j in range(4)]))
    assert not torch.equal(one.centres, kmeans(x, 4, init="random", max_iter=1, seed=4).centres)


@pytest.mark.parametrize("tol", [5.0, 0.5, 1e-3])
def test_the_total_shift_rule_stops_at_the_first_small_enough_step(tol):
    """kmeans_pytorch's rule, step by step: the centres after i steps are those of max_iter=i."""
    x = blobs(seed=1)
    done = kmeans(x, 4, init="random", stop="total", tol=tol, max_iter=None, seed=0)
    g = torch.Generator().manual_seed(0)
    previous = x[torch.randperm(len(x), generator=g)[:4]]
    for i in range(1, done.iterations + 1):
        current = kmeans(x, 4, init="random", stop="total", tol=0.0, max_iter=i, seed=0).centres
        small = float((current - previous).norm(dim=1).sum()) ** 2 < tol
        assert small == (i == done.iterations), (i, done.iterations)
        previous = current
    assert done.converged and torch.equal(previous, done.centres)


def test_no_iteration_cap_runs_to_convergence():
    x = blobs(seed=2)
    capped = kmeans(x, 4, init="random", tol=1e-12, max_iter=2, seed=0)
    free = kmeans(x, 4, init="random", tol=1e-12, max_iter=None, seed=0)  # stops once no point changes cluster
    assert not capped.converged and free.converged and free.iterations > 2
    with pytest.raises(ValueError, match="max_iter must be a positive int or None"):
        kmeans(x, 4, max_iter=0)
    with pytest.raises(ValueError, match="init must be"):
        kmeans(x, 4, init="farthest")  # type: ignore[arg-type]


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split_scales": []}, r"lpcam.split_scales=\(\): expected a non-empty list of positive scales"),
        ({"split_scales": [1.0, 0.0]}, r"lpcam.split_scales=\(1.0, 0.0\): expected a non-empty list"),
        ({"split_resolution": "pixels"}, r"lpcam.split_resolution='pixels': expected feature_grid or image"),
        ({"kmeans_init": "k-means++"}, r"lpcam.kmeans_init='k-means\+\+': expected kmeans\+\+ or greedy or random"),
        ({"kmeans_stop": "shift"}, r"lpcam.kmeans_stop='shift': expected relative or total"),
        ({"kmeans_tol": -1}, r"lpcam.kmeans_tol=-1: expected a tolerance ≥ 0"),
        ({"kmeans_max_iter": 0}, r"lpcam.kmeans_max_iter=0: expected a whole number ≥ 1, or null"),
        ({"kmeans_init_sample": 5}, r"lpcam.kmeans_init_sample=5: expected a whole number of rows, at least lpcam.k"),
        ({"kmeans_init_sample": 3072.5}, r"lpcam.kmeans_init_sample=3072.5: expected"),
    ],
)
def test_the_new_settings_name_the_field_and_the_range(kwargs, message):
    with pytest.raises(InputError, match=message):
        PrototypeSettings(**kwargs)


def test_the_split_settings_reach_the_feature_cache_key_and_lists_become_tuples():
    s = PrototypeSettings(split_scales=[1.0, 0.5])
    assert s.split_scales == (1.0, 0.5)
    for change in ({"split_scales": (1.0,)}, {"split_flip": False}, {"split_resolution": "image"}):
        assert PrototypeSettings(**{**s.as_dict(), **change}).sampling_dict() != s.sampling_dict()
    # the k-means settings do not change the sampled features: jobs differing only there share a pool
    other = PrototypeSettings(**{**s.as_dict(), "kmeans_init": "random", "kmeans_stop": "total", "kmeans_tol": 5.0,
                                 "kmeans_init_sample": 3072})  # fmt: skip
    assert other.sampling_dict() == s.sampling_dict()


def test_every_kmeans_setting_reaches_the_kmeans_call(monkeypatch):
    import lpcam.prototypes.clustering as clustering

    seen: dict = {}

    def spy(rows, k, **kwargs):
        seen.update(k=k, **kwargs)
        return kmeans(rows, k, **kwargs)

    monkeypatch.setattr(clustering, "kmeans", spy)
    s = PrototypeSettings(k=3, kmeans_metric="euclidean", kmeans_init="greedy", kmeans_init_sample=40,
                          kmeans_stop="total", kmeans_tol=0.5, kmeans_max_iter=7, seed=5)  # fmt: skip
    res = clustering.cluster(torch.rand(100, 4, generator=torch.Generator().manual_seed(0)), s)
    assert seen == {"k": 3, "metric": "euclidean", "max_iter": 7, "tol": 0.5, "seed": 5, "init": "greedy",
                    "stop": "total", "init_sample": 40, "start": None}  # fmt: skip
    assert res.iterations <= 7


# ------------------------------------------------------------------ the τ boundary


def test_tau_ties_drop_leaves_positions_exactly_at_tau_out_of_both_sides(classifier, monkeypatch):
    """The official code keeps CAM > τ as foreground and CAM < τ as background: a position at τ is in neither."""
    import lpcam.stages.prototypes as stage

    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = classifier.features(images)
    grid = feats.shape[-2:]
    cams = torch.full((2, 3, *grid), 0.05)
    cams[:, :, 0, :] = 0.1  # one row exactly at τ
    cams[:, :, 1, :] = 0.5
    monkeypatch.setattr(stage, "split_cams", lambda model, x, settings: (feats, cams))
    batch = {"image": images, "label": torch.tensor([[1.0, 0, 1], [0, 1, 0]]),
             "mask": torch.zeros(2, 32, 32, dtype=torch.long), "parts": torch.zeros(2, 32, 32, dtype=torch.long)}  # fmt: skip
    row = grid[1]
    for ties, bg_rows in (("background", grid[0] - 1), ("drop", grid[0] - 2)):
        pool = stage.collect_features(classifier, [batch], 3, PrototypeSettings(tau=0.1, tau_ties=ties), progress=False)
        assert [len(side.rows) for side in pool.fg] == [row, row, row]
        assert [len(side.rows) for side in pool.bg] == [bg_rows * row] * 3  # image 0: two classes, image 1: one


def test_tau_ties_and_the_split_rescale_reach_the_feature_cache_key():
    s = PrototypeSettings()
    for change in ({"tau_ties": "background"}, {"split_rescale": "bilinear"}, {"split_upsample": "direct"}):
        assert PrototypeSettings(**{**s.as_dict(), **change}).sampling_dict() != s.sampling_dict()


def test_the_split_cam_uses_its_rescale_and_upsampling(classifier):
    images = (torch.rand(2, 3, 40, 56) * 255).round() / 255
    settings = PrototypeSettings(split_scales=SCALES, split_resolution="image", split_rescale="pil_bicubic", split_upsample="padded")
    with torch.no_grad():
        feats, cams = split_cams(classifier, images, settings)
        views = multiscale_features(classifier.features, images, SCALES, True, "pil_bicubic")
        full = cam_maps(views, classifier.weights, (40, 56), "padded")
        torch.testing.assert_close(cams, F.interpolate(full, size=feats.shape[-2:], mode="nearest"))
        bilinear_settings = PrototypeSettings(split_scales=SCALES, split_resolution="image", split_rescale="bilinear", split_upsample="direct")
        _, bilinear = split_cams(classifier, images, bilinear_settings)
    assert not torch.equal(cams, bilinear)


# ------------------------------------------------------------------ the official k-means's draws


def test_kmeans_from_given_rows_starts_there():
    x = blobs()
    start = torch.tensor([5, 17, 100, 230])
    one = kmeans(x, 4, init="random", max_iter=1, start=start)
    labels = (F.normalize(x, dim=1) @ F.normalize(x[start], dim=1).T).argmax(1)
    torch.testing.assert_close(one.centres, torch.stack([x[labels == j].mean(0) for j in range(4)]))
    with pytest.raises(ValueError, match="start must be 4 distinct row indices"):
        kmeans(x, 4, init="random", start=torch.tensor([1, 1, 2, 3]))
    with pytest.raises(ValueError, match="start .* goes with init='random'"):
        kmeans(x, 4, init="kmeans++", start=start)


def test_numpy_draws_are_kmeans_pytorchs_class_by_class(monkeypatch):
    """kmeans_pytorch draws its initial rows with np.random.choice(n, k, replace=False); the official
    code clusters class 0's foreground, then its background, then class 1's...: lpcam.kmeans_rng=numpy
    makes the same calls on RandomState(lpcam.seed), so a draw is the official code's after np.random.seed."""
    import numpy as np

    import lpcam.prototypes.clustering as clustering
    from lpcam.prototypes.pool import FeaturePool

    starts = []
    monkeypatch.setattr(clustering, "kmeans", lambda rows, k, **kw: starts.append((len(rows), kw["start"])) or kmeans(rows, k, **kw))
    pool = FeaturePool(2, 8, cap=1000)
    g = torch.Generator().manual_seed(0)
    for c, (n_fg, n_bg) in enumerate([(40, 90), (25, 60)]):
        pool.fg[c].add(torch.rand(n_fg, 8, generator=g))
        pool.bg[c].add(torch.rand(n_bg, 8, generator=g))
    settings = PrototypeSettings(k=3, kmeans_init="random", kmeans_rng="numpy", kmeans_stop="total", kmeans_tol=5, seed=7)
    clustering.cluster_and_select(pool, torch.rand(2, 8, generator=g), ["a", "b"], settings, progress=False)
    np.random.seed(7)  # what the official code's k-means would draw after np.random.seed(7)
    expected = [(n, np.random.choice(n, 3, replace=False)) for n in (40, 90, 25, 60)]
    assert [n for n, _ in starts] == [n for n, _ in expected]
    for (_, ours), (_, theirs) in zip(starts, expected):
        assert ours.tolist() == theirs.tolist()
    with pytest.raises(InputError, match="lpcam.kmeans_rng='numpy': expected torch or numpy \\(numpy only with lpcam.kmeans_init=random\\)"):
        PrototypeSettings(kmeans_rng="numpy", kmeans_init="kmeans++")
