"""Which images prototypes come from, the pool's memory budget and the bf16 feature pass."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate

from lpcam.errors import InputError
from lpcam.pipeline import prototype_settings, run
from lpcam.prototypes.store import Prototypes
from lpcam.stages.prototypes import collect_features, new_pool


def _datamodule(cfg):
    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    return dm


def test_prototypes_come_from_the_chosen_split(tiny):
    dm = _datamodule(tiny())  # by default the seed-evaluation split, as the official VOC code
    loader = dm.prototype_dataloader()
    assert len(loader.dataset) == 16 and list(loader.dataset.ids) == list(dm.dataset("train").ids)
    dm = _datamodule(tiny("dataset.prototype_split=null"))  # null: the training split
    assert len(dm.prototype_dataloader().dataset) == 64 and dm.prototype_split == "train_aug"


def test_images_per_class_draws_that_many_images_of_each_class(tiny):
    coco_recipe = ("dataset.images_per_class=5", "dataset.prototype_split=null")  # from the training split
    dm = _datamodule(tiny(*coco_recipe))
    dataset = dm.dataset(dm.train_split)
    chosen = list(dm.prototype_indices(dataset))
    assert chosen == sorted(set(chosen))
    for images in dataset.images_of_class:
        assert len(images) > 5 and 5 <= len(set(images) & set(chosen))  # others' draws may add more
    labelled = [i for images in dataset.images_of_class for i in images]
    assert set(chosen) <= set(labelled) and len(chosen) <= 5 * len(dataset.images_of_class) < len(dataset)
    assert chosen == list(_datamodule(tiny(*coco_recipe)).prototype_indices(dataset))  # seeded
    assert len(dm.prototype_dataloader().dataset) == len(chosen)
    # the label file and the masks agree on which images hold a class
    for c, images in enumerate(dataset.images_of_class):
        assert all(dataset[i]["label"][c] == 1 for i in images[:3])


def test_a_run_rebuilds_prototypes_built_from_other_images(tiny, tmp_path):
    first = run(tiny(run="first"))
    ckpt = tmp_path / "first" / "checkpoints" / "best.ckpt"
    carried = Prototypes.from_checkpoint(torch.load(ckpt, weights_only=False), str(ckpt))
    assert carried.meta["images"] == {"split": "train", "images_per_class": None, "seed": None}
    assert first["prototypes"]["images"]["split"] == "train"
    again = run(tiny(f"ckpt_path={ckpt}", "stage=all", run="again"))
    assert again["provenance"]["prototypes"]["source"] == "checkpoint"  # same images: carried over
    other = run(tiny(f"ckpt_path={ckpt}", "dataset.prototype_split=null", "cache.features=false", run="other"))
    assert other["provenance"]["prototypes"]["source"] == "built"
    assert other["prototypes"]["images"]["split"] == "train_aug"
    saved = json.loads((tmp_path / "other" / "results.json").read_text())
    assert saved["prototypes"]["images"] == {"split": "train_aug", "images_per_class": None, "seed": None}


def test_a_budget_too_small_for_k_features_is_refused_naming_the_setting(tiny):
    settings = prototype_settings(tiny("lpcam.pool_memory_mb=0.0005", "lpcam.max_features_per_class=null"))
    with pytest.raises(InputError, match=r"lpcam.pool_memory_mb=0.0005: holds only \d+ 16-d features .* raise the budget"):
        new_pool(2, 16, settings)
    with pytest.raises(InputError, match=r"holds only 0 2048-d features"):
        new_pool(80, 2048, settings)
    settings = prototype_settings(tiny("lpcam.pool_memory_mb=1", "lpcam.max_features_per_class=null"))
    assert new_pool(2, 16, settings).cap == 2**20 // (4 * (16 * 4 + 1))


def test_half_precision_pool_and_bf16_feature_pass_sample_the_same_positions(tiny):
    cfg = tiny()
    dm = _datamodule(cfg)
    from lpcam.models.classifier import Classifier

    torch.manual_seed(0)
    model = Classifier(instantiate(cfg.backbone), num_classes=dm.num_classes).eval()
    full = collect_features(model, dm.prototype_dataloader(), dm.num_classes, prototype_settings(cfg), progress=False)
    half = collect_features(
        model, dm.prototype_dataloader(), dm.num_classes, prototype_settings(tiny("lpcam.pool_dtype=float16")), progress=False
    )
    bf16 = collect_features(
        model, dm.prototype_dataloader(), dm.num_classes, prototype_settings(tiny("lpcam.feature_dtype=bfloat16")),
        progress=False,
    )  # fmt: skip
    assert half.fg[0].rows.dtype == torch.float16 and half.nbytes < 0.6 * full.nbytes
    for c in range(dm.num_classes):
        # float16 storage: the same features, rounded
        assert torch.equal(half.fg[c].tags, full.fg[c].tags) and half.fg[c].seen == full.fg[c].seen
        torch.testing.assert_close(half.fg[c].rows.float(), full.fg[c].rows, rtol=1e-3, atol=1e-3)
        # bf16 forward: nearly the same split (positions near tau may change side), close features
        assert abs(bf16.fg[c].seen - full.fg[c].seen) <= 0.05 * full.fg[c].seen + 5


def test_the_ddp_trainer_config_is_a_valid_trainer(tiny):
    cfg = tiny("trainer=ddp")
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy, cfg.trainer.precision) == (
        "gpu", -1, "ddp", "bf16-mixed"
    )
    trainer = instantiate(tiny("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2").trainer, logger=False)
    assert trainer.world_size == 2 and type(trainer.strategy).__name__ == "DDPStrategy"
