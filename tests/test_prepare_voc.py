"""``lpcam-data voc DIR`` against tiny archives with the real layouts (``VOCdevkit/VOC2012/...``,
SBD's ``benchmark_RELEASE/dataset/cls/*.mat`` written with scipy), served by a loopback HTTP
server through the mirror setting: the real download, extraction and conversion code."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from lpcam.cli.data import main as lpcam_data
from lpcam.data import prepare_voc as prep
from lpcam.data.palette import save_palette_png
from lpcam.downloads import RemoteFile
from lpcam.errors import InputError
from tests.conftest import compose_config
from tests.test_downloads import server  # noqa: F401  (the loopback server fixture)

VOC_TRAIN = ["2007_000032", "2007_000039", "2007_000063"]
VOC_VAL = ["2007_000033", "2007_000042"]
SBD_TRAIN = ["2008_000002", "2008_000003", "2007_000033", "2007_000039"]  # one VOC val id, one VOC train id
SBD_VAL = ["2008_000007", "2008_000008"]
ALL = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))


TRAIN_AUG = sorted((set(SBD_TRAIN) | set(SBD_VAL) | set(VOC_TRAIN)) - set(VOC_VAL))


def classes_of(image_id: str) -> list[int]:
    """Up to 3 of VOC's 20 classes per image, so that train_aug's 7 images hold every class (the
    data check refuses a class without a training image)."""
    if image_id not in TRAIN_AUG:
        return [15]
    return [c for c in range(1, 21) if (c - 1) % len(TRAIN_AUG) == TRAIN_AUG.index(image_id)]


def mask_of(image_id: str, border: bool) -> np.ndarray:
    mask = np.zeros((48, 64), np.uint8)
    for k, c in enumerate(classes_of(image_id)):
        mask[10:38, 4 + 20 * k : 18 + 20 * k] = c
        if border:  # VOC's 255 outline
            mask[9, 3 + 20 * k : 19 + 20 * k] = mask[38, 3 + 20 * k : 19 + 20 * k] = 255
    return mask


def image_of(image_id: str) -> bytes:
    rng = np.random.default_rng(int(image_id[-3:]))
    pixels = rng.integers(0, 80, (48, 64, 3), dtype=np.uint8)
    for k, c in enumerate(classes_of(image_id)):
        pixels[10:38, 4 + 20 * k : 18 + 20 * k] = (12 * c, 255 - 12 * c, (37 * c) % 256)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def voc_archive(tmp: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        base = "VOCdevkit/VOC2012"
        for image_id in ALL:  # VOC's JPEGImages holds SBD's images too (17,125 in all)
            add(tar, f"{base}/JPEGImages/{image_id}.jpg", image_of(image_id))
        for image_id in VOC_TRAIN + VOC_VAL:
            save_palette_png(mask_of(image_id, border=True), tmp / "m.png")
            add(tar, f"{base}/SegmentationClass/{image_id}.png", (tmp / "m.png").read_bytes())
        add(tar, f"{base}/ImageSets/Segmentation/train.txt", "".join(f"{i}\n" for i in VOC_TRAIN).encode())
        add(tar, f"{base}/ImageSets/Segmentation/val.txt", "".join(f"{i}\n" for i in VOC_VAL).encode())
        add(tar, f"{base}/Annotations/{ALL[0]}.xml", b"<annotation/>")
    return buf.getvalue()


def sbd_archive(tmp: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        base = "benchmark_RELEASE/dataset"
        for image_id in SBD_TRAIN + SBD_VAL:
            seg = mask_of(image_id, border=False)
            savemat(tmp / "m.mat", {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros((1, 20)), "CategoriesPresent": np.array(classes_of(image_id))}})
            add(tar, f"{base}/cls/{image_id}.mat", (tmp / "m.mat").read_bytes())
            add(tar, f"{base}/img/{image_id}.jpg", image_of(image_id))  # not extracted: lpcam needs VOC's copy
        add(tar, f"{base}/train.txt", "".join(f"{i}\n" for i in SBD_TRAIN).encode())
        add(tar, f"{base}/val.txt", "".join(f"{i}\n" for i in SBD_VAL).encode())
    return buf.getvalue()


@pytest.fixture
def archives(server, tmp_path, monkeypatch):  # noqa: F811
    """The two archives on the loopback server, with their own MD5 sums in place of the real ones."""
    (tmp_path / "build").mkdir()
    files = {prep.VOC_TAR.filename: voc_archive(tmp_path / "build"), prep.SBD_TGZ.filename: sbd_archive(tmp_path / "build")}
    server.files.update(files)
    for name, remote in (("VOC_TAR", prep.VOC_TAR), ("SBD_TGZ", prep.SBD_TGZ)):
        digest = hashlib.md5(files[remote.filename]).hexdigest()
        monkeypatch.setattr(prep, name, RemoteFile(remote.url, digest, remote.what, algorithm="md5"))
    monkeypatch.setattr(prep, "NEEDED_BYTES", 1_000_000)
    return server


def test_voc_and_sbd_become_a_dataset_that_dataset_voc_trains_on(archives, tmp_path, capsys):
    from lpcam.pipeline import run

    assert lpcam_data(["voc", str(tmp_path / "data"), "--no-progress"]) == 0
    root = tmp_path / "data" / "VOC2012"
    assert "ready (7 train_aug, 3 train, 2 val)" in capsys.readouterr().out
    lists = root / "ImageSets" / "Segmentation"
    aug = lists.joinpath("train_aug.txt").read_text().split()
    # IRN's rule: SBD train + SBD val + VOC train, minus VOC val
    assert aug == sorted((set(SBD_TRAIN) | set(SBD_VAL) | set(VOC_TRAIN)) - set(VOC_VAL))
    assert not set(aug) & set(VOC_VAL)
    # an SBD-only mask: its class ids as written in the .mat, VOC's palette; VOC's own masks keep their 255
    sbd_only = np.array(Image.open(root / "SegmentationClassAug" / "2008_000002.png"))
    assert Image.open(root / "SegmentationClassAug" / "2008_000002.png").mode == "P"
    assert np.array_equal(sbd_only, mask_of("2008_000002", border=False))
    assert np.array_equal(np.array(Image.open(root / "SegmentationClass" / "2008_000002.png")), sbd_only)
    assert np.array_equal(np.array(Image.open(root / "SegmentationClassAug" / "2007_000039.png")), mask_of("2007_000039", border=True))
    assert not (tmp_path / "data" / f"{prep.STAGING}-VOC2012").exists()

    # a second call finds the tree complete and downloads nothing
    asked = len(archives.requests)
    assert lpcam_data(["voc", str(tmp_path / "data"), "--no-progress"]) == 0
    assert "already complete (7 train_aug, 3 train, 2 val); nothing to do" in capsys.readouterr().out
    assert len(archives.requests) == asked

    cfg = compose_config([
        "dataset=voc", f"data_dir={tmp_path / 'data'}", f"cache.dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}",
        "dataset.batch_size=3", "dataset.num_workers=0", "dataset.train_transform.resize_long=[64,72]",
        "dataset.train_transform.crop=64", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "evaluation.scales=[1.0]", "lpcam.k=2", "logger=csv",
    ])  # fmt: skip
    results = run(cfg)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["dataset"] == "voc" and results is not None
    assert set(written["methods"]) >= {"cam", "lpcam_official"}


def test_a_killed_preparation_is_redone_and_a_foreign_tree_is_left_alone(archives, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = prep._write_masks

    def killed(*args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt  # as a kill in the middle of the conversion

    monkeypatch.setattr(prep, "_write_masks", killed)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare_voc(tmp_path / "data" / "VOC2012", progress=False)
    assert (tmp_path / "data" / f"{prep.STAGING}-VOC2012").is_dir() and not (tmp_path / "data" / "VOC2012").exists()
    monkeypatch.setattr(prep, "_write_masks", real)
    asked = len(archives.requests)
    prepared = prep.prepare_voc(tmp_path / "data" / "VOC2012", progress=False)  # the staging is removed and redone
    assert not prepared.done_before and (prepared.root / prep.MARKER).is_file()
    assert len(archives.requests) == asked  # the downloads were kept

    (tmp_path / "mine" / "VOC2012").mkdir(parents=True)
    with pytest.raises(InputError, match=r"mine/VOC2012: exists but was not prepared by lpcam"):
        prep.prepare_voc(tmp_path / "mine" / "VOC2012", progress=False)


def test_a_wrong_archive_and_too_little_disk_are_one_line_each(archives, tmp_path, monkeypatch, capsys):
    archives.files[prep.SBD_TGZ.filename] = b"not SBD"
    assert lpcam_data(["voc", str(tmp_path / "data"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lpcam-data: error: SBD (benchmark.tgz): ") and "gave a file with MD5" in err and "\n" not in err

    monkeypatch.setattr(prep, "NEEDED_BYTES", 10**15)
    assert lpcam_data(["voc", str(tmp_path / "other"), "--no-progress"]) == 1
    assert "VOC2012 + SBD need about 1000000.0 GB there" in capsys.readouterr().err


def test_the_train_aug_rule():
    assert prep.train_aug_ids(["a", "b"], ["c"], ["d", "b"], ["c"]) == ["a", "b", "d"]


def test_the_papers_recipe_runs_from_an_empty_folder_and_the_offline_switch_stops_it_in_one_line(archives, tmp_path, monkeypatch):
    """``experiment=voc_resnet50 dataset.download=true trainer=cpu``: VOC + SBD and the ResNet-50
    ImageNet weights come from the (loopback) mirror; with LPCAM_OFFLINE=1 nothing is asked for."""
    import torch
    import torchvision

    from lpcam.downloads import hub_hash_prefix
    from lpcam.models import backbones
    from lpcam.pipeline import run

    weights = tmp_path / "build" / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    data = weights.read_bytes()
    name = f"resnet50-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    archives.files[name] = data
    monkeypatch.setattr(backbones, "imagenet_weights", lambda arch, tag="DEFAULT": RemoteFile(
        f"https://download.pytorch.org/models/{name}", hub_hash_prefix(name), f"{arch} ImageNet weights"))  # fmt: skip
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    recipe = lambda root: compose_config([  # noqa: E731
        "experiment=voc_resnet50", "dataset.download=true", "trainer=cpu", f"data_dir={root}",
        f"cache.dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}", "trainer.max_epochs=1",
        "dataset.num_workers=0", "dataset.train_transform.resize_long=[64,72]", "dataset.train_transform.crop=64",
        "evaluation.scales=[1.0]", "evaluation.flip=false", "trainer.enable_progress_bar=false", "logger=csv",
        "trainer.precision=32-true",
    ])  # fmt: skip

    with monkeypatch.context() as m:
        m.setenv("LPCAM_OFFLINE", "1")
        with pytest.raises(InputError) as err:
            run(recipe(tmp_path / "offline"))
        assert "downloads are off (LPCAM_OFFLINE=1 or HF_HUB_OFFLINE=1); put the file there" in str(err.value)
        assert "\n" not in str(err.value) and archives.requests == []

    assert run(recipe(tmp_path / "empty")) is not None
    assert (tmp_path / "empty" / "VOC2012" / prep.MARKER).is_file() and (tmp_path / "hub" / "checkpoints" / name).is_file()
    assert sorted(archives.names()) == sorted([prep.VOC_TAR.filename, prep.SBD_TGZ.filename, name])
    assert json.loads((tmp_path / "run" / "results.json").read_text())["backbone"] == "resnet50"


def test_the_sources_are_torchvisions():
    from torchvision.datasets import SBDataset
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    assert (prep.VOC_TAR.url, prep.VOC_TAR.digest) == (DATASET_YEAR_DICT["2012"]["url"], DATASET_YEAR_DICT["2012"]["md5"])
    assert (prep.SBD_TGZ.url, prep.SBD_TGZ.digest, prep.SBD_TGZ.algorithm) == (SBDataset.url, SBDataset.md5, "md5")
    assert prep.VOC_TAR.filename == "VOCtrainval_11-May-2012.tar" and prep.SBD_TGZ.filename == "benchmark.tgz"


def test_a_broken_archive_put_in_downloads_by_hand_is_one_line(archives, tmp_path):
    (tmp_path / "data" / "downloads").mkdir(parents=True)
    (tmp_path / "data" / "downloads" / prep.VOC_TAR.filename).write_bytes(b"half a tar")  # present: trusted as torch hub trusts its cache
    with pytest.raises(InputError, match=r"VOCtrainval_11-May-2012.tar: not a readable tar archive \(ReadError\); remove it and run again") as err:
        prep.prepare_voc(tmp_path / "data" / "VOC2012", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data" / "VOC2012").exists()
