"""Backbones: geometry (output stride, channels) and weight loading without downloads."""

import pytest
import torch

from lpcam.errors import MissingInput
from lpcam.models.backbones import small_resnet, torchvision_resnet


@pytest.mark.parametrize("arch,os,channels", [("resnet18", 16, 512), ("resnet18", 8, 512), ("resnet50", 16, 2048)])
def test_torchvision_resnet_output_stride(arch, os, channels):
    net = torchvision_resnet(arch, output_stride=os).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, channels, 64 // os, 96 // os)
    assert net.stride == os and net.out_channels == channels and net.layer == "layer4"


def test_small_resnet_geometry_and_non_negative_features():
    net = small_resnet().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 96, 96))
    assert out.shape == (2, 128, 24, 24) and net.stride == 4
    assert out.min() >= 0  # post-ReLU features, as the paper's stage-4 output


def test_weights_from_a_file_and_clear_errors(tmp_path, monkeypatch):
    import torchvision

    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "r18.pth")
    net = torchvision_resnet("resnet18", weights=str(tmp_path / "r18.pth"))
    assert torch.equal(net.body[0].weight, state["conv1.weight"])
    with pytest.raises(MissingInput, match="backbone.weights=.*no such file"):
        torchvision_resnet("resnet18", weights=str(tmp_path / "missing.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("LPCAM_OFFLINE", "1")  # downloads: tests/test_downloads.py, against a loopback server
    with pytest.raises(MissingInput, match="resnet18-f37072fd.pth is not there and downloads are off"):
        torchvision_resnet("resnet18", pretrained=True)
    with pytest.raises(ValueError, match="output_stride"):
        torchvision_resnet("resnet18", output_stride=4)


def test_a_backbone_added_by_one_yaml_in_the_users_config_folder(tiny, tmp_path):
    # what the backbones page tells a user to do: one file in their own config folder, no code change
    from lpcam.pipeline import run

    folder = tmp_path / "my_conf" / "backbone"
    folder.mkdir(parents=True)
    (folder / "slim_resnet.yaml").write_text(
        "_target_: lpcam.models.backbones.small_resnet\nwidths: [16, 32, 48]\nblocks: [1, 1, 1]\nstrides: [2, 2, 1]\n"
    )
    cfg = tiny(f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "backbone=slim_resnet")
    results = run(cfg)
    assert results["backbone"] == "small_resnet"
    protos = torch.load(tmp_path / "run" / "prototypes.pt", weights_only=False)
    assert protos["meta"]["dim"] == 48 and protos["class_protos"][0].shape[1] == 48
    assert results["methods"]["lpcam_official"]["best"]["miou"] > 0


def test_paper_experiment_config_states_the_recipe():
    from tests.conftest import compose_config

    cfg = compose_config(["experiment=voc_resnet50"])
    assert cfg.backbone.arch == "resnet50" and cfg.backbone.output_stride == 16 and cfg.backbone.pretrained
    assert cfg.dataset.name == "voc" and cfg.dataset.batch_size == 16 and cfg.dataset.train_transform.crop == 512
    assert cfg.trainer.max_epochs == 5 and cfg.model.lr == 0.1 and cfg.model.classifier_lr_mult == 10
    assert list(cfg.evaluation.scales) == [1.0, 0.5, 1.5, 2.0]
    assert (cfg.lpcam.k, cfg.lpcam.tau, cfg.lpcam.mu_fg, cfg.lpcam.mu_bg) == (12, 0.1, 0.9, 0.9)


def test_timm_cnn_last_feature_map_at_the_asked_stride():
    from lpcam.models.timm_backbones import timm_cnn

    net = timm_cnn("resnet18", output_stride=16).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 512, 4, 6) and net.stride == 16 and net.out_channels == 512 and net.layer == "layer4"


def test_vit_patch_tokens_form_a_map_at_any_input_size():
    from lpcam.models.timm_backbones import vit_tokens

    net = vit_tokens("deit_tiny_patch16_224").eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 96))
        odd = net(torch.rand(1, 3, 72, 100))  # padded to whole patches
    assert out.shape == (2, 192, 4, 6) and odd.shape == (1, 192, 5, 7)
    assert net.stride == 16 and net.layer == "blocks"
    # a token's feature depends on its own patch: changing one corner patch changes that position most
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[..., :16, :16] = 0
    with torch.no_grad():
        diff = (net(x) - net(y)).norm(dim=1)[0]
    assert diff.argmax() == 0


def test_timm_weights_from_a_file_and_a_clear_error_without_them(tmp_path, monkeypatch):
    import timm

    from lpcam.models.timm_backbones import timm_cnn, vit_tokens

    state = timm.create_model("deit_tiny_patch16_224", num_classes=0).state_dict()
    torch.save(state, tmp_path / "deit.pth")
    net = vit_tokens("deit_tiny_patch16_224", weights=str(tmp_path / "deit.pth"))
    assert torch.equal(net.body.net.pos_embed, state["pos_embed"])
    with pytest.raises(MissingInput, match="backbone.weights=.*no such file"):
        timm_cnn("resnet18", weights=str(tmp_path / "missing.pth"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(MissingInput, match=r"not in the local Hugging Face cache and downloads are off \(LPCAM_OFFLINE=1 or HF_HUB_OFFLINE=1\)"):
        timm_cnn("resnet18", pretrained=True)


def test_pipeline_runs_on_a_vit(tiny):
    from lpcam.pipeline import run

    results = run(tiny("backbone=deit_small", "backbone.model_name=deit_tiny_patch16_224"))
    assert results["backbone"] == "deit_tiny_patch16_224"
    assert all(c["class"] >= 1 for c in results["prototypes"]["counts"].values())


IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def test_torchvision_and_small_resnet_normalise_with_imagenet_stats():
    for net in (small_resnet(), torchvision_resnet("resnet18")):
        assert net.normalisation == IMAGENET
        assert torch.equal(net.mean.flatten(), torch.tensor(IMAGENET["mean"]))
        assert torch.equal(net.std.flatten(), torch.tensor(IMAGENET["std"]))
    # the default job's input is exactly what it was: (x - ImageNet mean) / ImageNet std
    net = small_resnet().eval()
    x = torch.rand(1, 3, 16, 16)
    mean, std = (torch.tensor(IMAGENET[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        expected = net.body(((x - mean) / std).contiguous(memory_format=torch.channels_last))
        assert torch.equal(net(x), expected.contiguous())


@pytest.mark.parametrize(
    "builder,model_name,stats",
    [
        ("timm_cnn", "tf_efficientnet_lite0", {"mean": (0.5,) * 3, "std": (0.5,) * 3}),
        ("timm_cnn", "resnet18", IMAGENET),
        ("vit_tokens", "vit_tiny_patch16_224", {"mean": (0.5,) * 3, "std": (0.5,) * 3}),
        ("vit_tokens", "deit_tiny_patch16_224", IMAGENET),
    ],
)
def test_timm_backbones_normalise_with_the_models_own_pretrained_stats(builder, model_name, stats):
    import timm

    from lpcam.models import timm_backbones

    cfg = timm.models.get_pretrained_cfg(model_name)  # offline: timm's registry, no download
    assert (tuple(cfg.mean), tuple(cfg.std)) == (stats["mean"], stats["std"])
    kwargs = {"output_stride": None} if builder == "timm_cnn" else {}
    net = getattr(timm_backbones, builder)(model_name, pretrained=False, **kwargs).eval()
    assert net.normalisation == stats
    assert torch.allclose(net.mean.flatten(), torch.tensor(stats["mean"]))
    assert torch.allclose(net.std.flatten(), torch.tensor(stats["std"]))
    # the forward pass uses them: a grey image at the model's mean is a zero input to the body
    x = torch.tensor(stats["mean"]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), net.body(torch.zeros(1, 3, 32, 32)), atol=1e-5)


def test_backbone_refuses_a_malformed_normalisation():
    from lpcam.models.backbones import Backbone

    with pytest.raises(ValueError, match="normalisation"):
        Backbone(torch.nn.Identity(), 3, 1, "id", "id", mean=(0.5, 0.5), std=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="normalisation"):
        Backbone(torch.nn.Identity(), 3, 1, "id", "id", std=(0.5, 0.0, 0.5))
