"""The embedded benchmark and the VOC-layout reader."""

import numpy as np
import pytest
from PIL import Image

from lpcam.data.datamodule import SegmentationDataModule
from lpcam.data.palette import save_palette_png
from lpcam.data.synthetic import SyntheticParts, _BODIES
from lpcam.data.voc import DatasetLayoutError, VOCSegmentation

SMALL = dict(num_train=12, num_eval=4, num_val=4, image_size=64)


def test_generator_writes_voc_layout_with_consistent_labels_and_parts(tmp_path):
    gen = SyntheticParts(**SMALL)
    root = gen.write(tmp_path / "sp", progress=False)
    for sub in ("JPEGImages/000000.jpg", "SegmentationClass/000000.png", "SegmentationPart/000000.png",
                "ImageSets/Segmentation/train_aug.txt", "cls_labels.npy", "classes.txt", "meta.json"):  # fmt: skip
        assert (root / sub).exists(), sub
    assert Image.open(root / "SegmentationClass/000000.png").mode == "P"  # VOC palette PNG
    ds = VOCSegmentation(root, "train_aug")
    assert len(ds) == 12 and ds.class_names == gen.class_names
    assert len(VOCSegmentation(root, "train")) == 4 and len(VOCSegmentation(root, "val")) == 4
    for i in range(len(ds)):
        item = ds[i]
        mask, parts = item["mask"], item["parts"]
        assert ((mask > 0) == (parts > 0)).all()  # every object pixel is a head or a body
        present = set(mask.unique().tolist()) - {0}
        assert present == {c + 1 for c in item["label"].nonzero().flatten().tolist()}
        assert 1 <= len(present) <= 2
        for c in present:  # each object has a small head and a larger body
            head = ((mask == c) & (parts == 1)).sum()
            body = ((mask == c) & (parts == 2)).sum()
            assert 0 < head < body


def test_generator_is_deterministic_and_cached(tmp_path):
    a = SyntheticParts(**SMALL).write(tmp_path / "a", progress=False)
    b = SyntheticParts(**SMALL).write(tmp_path / "b", progress=False)
    for name in ("JPEGImages/000003.jpg", "SegmentationClass/000003.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    stamp = (a / "meta.json").stat().st_mtime_ns
    SyntheticParts(**SMALL).write(a, progress=False)  # same parameters: nothing rewritten
    assert (a / "meta.json").stat().st_mtime_ns == stamp
    other = SyntheticParts(**{**SMALL, "seed": 1})
    assert other.fingerprint() != SyntheticParts(**SMALL).fingerprint()
    assert not other.matches(a)


def test_control_variant_gives_each_class_its_own_body():
    shared = SyntheticParts(num_classes=6, group_size=2)
    control = SyntheticParts(num_classes=6, group_size=2, shared_bodies=False)
    assert [shared.body_of(c) for c in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [control.body_of(c) for c in range(6)] == list(range(6))
    assert len({_BODIES[control.body_of(c)] for c in range(6)}) == 6


def test_bad_generator_parameters_are_refused():
    with pytest.raises(ValueError, match="group_size"):
        SyntheticParts(num_classes=6, group_size=4)
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticParts(num_classes=20)


def _tiny_voc(root, with_classes=True):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:4] = 2
    mask[0, :] = 255
    Image.fromarray(np.full((6, 8, 3), 100, np.uint8)).save(root / "JPEGImages/img1.jpg")
    save_palette_png(mask, root / "SegmentationClass/img1.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("img1\n")
    if with_classes:
        (root / "classes.txt").write_text("cat\ndog\nemu\n")


def test_voc_reader_derives_labels_from_masks_and_reads_classes(tmp_path):
    _tiny_voc(tmp_path / "voc")
    ds = VOCSegmentation(tmp_path / "voc", "train")
    item = ds[0]
    assert ds.class_names == ["cat", "dog", "emu"]
    assert item["label"].tolist() == [0.0, 1.0, 0.0]  # only class 2 (dog) is in the mask; 255 is not a class
    assert item["mask"][0, 0] == 255 and item["image"].shape == (3, 6, 8)
    assert item["parts"].sum() == 0  # no part maps in this dataset


def test_voc_reader_errors_name_the_path_and_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="JPEGImages/<id>.jpg"):
        VOCSegmentation(tmp_path / "nowhere", "train")
    _tiny_voc(tmp_path / "voc")
    with pytest.raises(DatasetLayoutError, match="val.txt: split file not found"):
        VOCSegmentation(tmp_path / "voc", "val")
    np.save(tmp_path / "voc/cls_labels.npy", {"img1": np.ones(5)}, allow_pickle=True)
    with pytest.raises(ValueError, match="labels have 5 classes but 3 class names"):
        VOCSegmentation(tmp_path / "voc", "train")


def test_datamodule_generates_into_a_folder_per_parameter_set(tmp_path):
    gen = SyntheticParts(**SMALL)
    dm = SegmentationDataModule(tmp_path / "sp", name="sp", generator=gen, batch_size=4, eval_batch_size=4)
    dm.prepare_data()
    assert dm.root == tmp_path / "sp" / gen.fingerprint()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["label"].shape == (4, 6)
    assert len(dm.test_dataloader().dataset) == 4
