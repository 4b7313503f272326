"""Settings are typed objects: their fields are the config's schema, their checks run when built,
and a new one needs only its field (and, outside lpcam, its schema registered)."""

from dataclasses import dataclass, field

import pytest
import torch
from hydra.utils import instantiate

from lpcam.cache import FeatureCache, weights_digest
from lpcam.config_schemas import LpcamEntries, register_schema
from lpcam.errors import InputError
from lpcam.models.classifier import Classifier
from lpcam.pipeline import prototype_settings, run
from lpcam.prototypes.settings import SAMPLING, PrototypeSettings
from lpcam.stages.evaluation import EvaluationSettings


@dataclass(frozen=True)
class WithStride(PrototypeSettings):
    """A prototype setting added as a user would outside lpcam: a field (here one that changes the
    sampled features, so it is declared SAMPLING), its schema registered, a yaml that uses it."""

    sample_stride: int = field(default=1, metadata=SAMPLING)


def test_a_new_prototype_setting_reaches_the_prototypes_file_and_the_feature_cache_key(tiny, tmp_path):
    conf = tmp_path / "my_conf" / "lpcam"
    conf.mkdir(parents=True)
    register_schema("strided_schema", WithStride, LpcamEntries)
    (conf / "strided.yaml").write_text(
        "defaults:\n  - /strided_schema@_here_\n  - aggregation: official\n  - _self_\n\n"
        "split_rescale: ${evaluation.rescale}\nsplit_upsample: ${evaluation.upsample}\nseed: ${seed}\n"
        "sample_stride: 2\n"
    )
    cfg = tiny(f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "lpcam=strided", "stage=train")
    settings = prototype_settings(cfg)
    assert type(settings).__name__ == "WithStride" and settings.sample_stride == 2 and settings.k == 3
    assert run(cfg) is None  # stage=train: classifier and prototypes

    meta = torch.load(tmp_path / "run" / "prototypes.pt", weights_only=False)["meta"]
    assert meta["sample_stride"] == 2 and meta["k"] == 3
    # the feature pool was cached under a key that includes the new setting
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    model = Classifier.load_from_checkpoint(ckpt, backbone=instantiate(cfg.backbone))
    cache = FeatureCache.for_run(cfg, lambda: instantiate(cfg.dataset).prototype_content_key)  # as the pipeline
    (cached,) = (tmp_path / "cache" / "features").glob("*.pt")
    assert cached == cache.path(weights_digest(model), settings.sampling_dict())
    other = WithStride(**{**settings.as_dict(), "sample_stride": 3})
    assert cache.path(weights_digest(model), other.sampling_dict()) != cached
    # K is not a sampling setting: jobs differing in K share the pool
    fewer = WithStride(**{**settings.as_dict(), "k": 2})
    assert cache.path(weights_digest(model), fewer.sampling_dict()) == cached


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 2.5}, "lpcam.k=2.5: expected a whole number"),
        ({"k": True}, "lpcam.k=True"),
        ({"mu_bg": 0.5, "context_min": 0.6}, "lpcam.context_min=0.6: expected a score in"),
        ({"k": 30, "max_features_per_class": 20}, "lpcam.max_features_per_class=20: expected a whole number, at least"),
        ({"kmeans_max_iter": 0}, "lpcam.kmeans_max_iter=0"),
        ({"pool_memory_mb": 0}, "lpcam.pool_memory_mb=0: expected megabytes > 0"),
        ({"pool_memory_mb": None, "max_features_per_class": None}, "lpcam.pool_memory_mb=None: expected megabytes"),
        ({"pool_dtype": "int8"}, "lpcam.pool_dtype='int8': expected float32 or float16 or bfloat16"),
        ({"split_rescale": "bicubic"}, "lpcam.split_rescale='bicubic': expected bilinear or pil_bicubic"),
        ({"split_upsample": "pad"}, "lpcam.split_upsample='pad': expected direct or padded"),
        ({"tau_ties": "foreground"}, "lpcam.tau_ties='foreground': expected background or drop"),
    ],
)
def test_prototype_settings_name_the_field_and_the_range(kwargs, message):
    with pytest.raises(InputError, match=message):
        PrototypeSettings(**kwargs)


def test_settings_are_frozen_and_give_their_dicts():
    s = PrototypeSettings()
    with pytest.raises(AttributeError):
        s.k = 3  # type: ignore[misc]
    assert s.sampling_dict() == {
        "tau": 0.1, "split_scales": (1.0,), "split_flip": True, "split_resolution": "feature_grid",
        "split_rescale": "pil_bicubic", "split_upsample": "padded", "tau_ties": "drop",
        "max_features_per_class": None, "pool_memory_mb": 4096, "pool_dtype": "float32", "feature_dtype": "float32",
        "seed": 0,
    }  # fmt: skip
    assert s.built(s.as_dict()) and not s.built({**s.as_dict(), "k": 5})


def test_evaluation_settings_take_lists_and_refuse_off_grid_thresholds():
    s = EvaluationSettings(scales=[1.0, 0.5], compare_rules=["max"])
    assert s.scales == (1.0, 0.5) and s.compare_rules == ("max",)
    assert EvaluationSettings(default_threshold=0.3).default_threshold == 0.3
    with pytest.raises(InputError, match="evaluation.default_threshold=0.33"):
        EvaluationSettings(default_threshold=0.33)
    with pytest.raises(InputError, match="evaluation.num_examples=-1"):
        EvaluationSettings(num_examples=-1)
    with pytest.raises(InputError, match="evaluation.rescale='nearest': expected bilinear or pil_bicubic"):
        EvaluationSettings(rescale="nearest")
    with pytest.raises(InputError, match="evaluation.upsample='crop': expected direct or padded"):
        EvaluationSettings(upsample="crop")


def test_the_split_cam_offers_the_evaluations_rescale_and_upsample_rules():
    """The prototype layer cannot import the CAM layer, so it repeats the two rules' names: the same names."""
    from lpcam.cams.multiscale import RESCALES, UPSAMPLES
    from lpcam.prototypes.settings import SPLIT_RESCALES, SPLIT_UPSAMPLES

    assert SPLIT_RESCALES == RESCALES and SPLIT_UPSAMPLES == UPSAMPLES
