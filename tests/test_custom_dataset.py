"""``dataset=custom dataset.root=PATH``: a VOC-layout folder run with settings chosen from what it holds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lpcam.data.custom import CustomDataModule
from lpcam.data.palette import save_palette_png
from lpcam.data.voc import DatasetLayoutError
from tests.conftest import compose_config

SHAPES = ("square", "disc", "bar")


def make_shapes_folder(
    root: Path,
    num_images: int = 40,
    size: int | tuple[int, int] = 96,
    splits: dict[str, float] | None = None,
    classes_txt: bool = True,
    num_classes: int = 3,
    seed: int = 0,
) -> Path:
    """A VOC-layout folder as a user would bring: ``num_images`` images with one or two shapes
    (square, disc, bar: each its own colour) on noise, masks 0 / class id / 255 rim, and only the
    split files in ``splits`` (name -> fraction of the images, taken in turn from the start)."""
    rng = np.random.default_rng(seed)
    splits = splits if splits is not None else {"train": 0.7, "val": 0.3}
    colours = np.array([[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.2, 0.3, 0.9]])
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"img{i:03d}" for i in range(num_images)]
    for i, name in enumerate(ids):
        h, w = (size, size) if isinstance(size, int) else (int(rng.integers(*size)), int(rng.integers(*size)))
        image = rng.uniform(0.3, 0.6, size=(h, w, 3))
        mask = np.zeros((h, w), np.uint8)
        classes = sorted({i % num_classes, int(rng.integers(num_classes))})
        yy, xx = np.mgrid[:h, :w]
        for c in classes:
            r = int(rng.integers(h // 8, h // 5))
            cy, cx = int(rng.integers(r + 1, h - r - 1)), int(rng.integers(r + 1, w - r - 1))
            kind = SHAPES[c % len(SHAPES)]
            if kind == "disc":
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif kind == "bar":
                inside = (abs(yy - cy) <= r // 3) & (abs(xx - cx) <= r)
            else:
                inside = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            rim = np.zeros_like(inside)
            rim[1:-1, 1:-1] = inside[1:-1, 1:-1] & ~(inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:])
            image[inside] = colours[c % len(colours)]
            mask[inside] = c + 1
            mask[rim] = 255
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        save_palette_png(mask, root / "SegmentationClass" / f"{name}.png")
    start = 0
    for split, fraction in splits.items():
        count = max(1, round(fraction * num_images))
        chosen = ids[start : start + count] if split != "train_aug" else ids
        start = start + count if split != "train_aug" else start
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(chosen) + "\n")
    if classes_txt:
        (root / "classes.txt").write_text("\n".join(SHAPES[:num_classes]) + "\n")
    return root


def datamodule(*overrides: str, root: Path) -> CustomDataModule:
    """The datamodule ``dataset=custom`` builds, through the project's config."""
    from hydra.utils import instantiate

    return instantiate(compose_config(["dataset=custom", f"dataset.root={root}", *overrides]).dataset)


@pytest.mark.parametrize("classes_txt", [False, True], ids=["names_from_masks", "classes_txt"])
def test_custom_config_runs_the_pipeline_on_a_96px_folder_with_train_and_val_only(tmp_path, caplog, classes_txt):
    """The issue's case: one override, no train_aug.txt, 96 px images (no resize, no crop)."""
    from lpcam.pipeline import run

    root = make_shapes_folder(tmp_path / "shapes", num_images=40, classes_txt=classes_txt)
    cfg = compose_config([
        "dataset=custom", f"dataset.root={root}", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
        "evaluation.scales=[1.0]", "lpcam.k=2", "logger=csv", f"cache.dir={tmp_path / 'cache'}",
        f"run_dir={tmp_path / 'run'}", f"data_dir={tmp_path / 'data'}",
    ])  # fmt: skip
    assert cfg.dataset.name == "shapes"  # at config time: Hydra's run dir is outputs/${dataset.name}/...
    with caplog.at_level(logging.INFO, logger="lpcam.data.custom"):
        results = run(cfg)
    names = list(SHAPES) if classes_txt else ["class1", "class2", "class3"]
    assert results["dataset"] == "shapes" and results["split"] == "train"
    assert list(results["methods"]["lpcam_official"]["per_class_iou"]) == ["background", *names]
    assert set(results["prototypes"]["counts"]) == set(names)
    assert 0 < results["methods"]["cam"]["best"]["miou"] <= 100
    (line,) = [r.getMessage() for r in caplog.records if r.name == "lpcam.data.custom"]
    assert "found splits train, val" in line and "all 96x96 px" in line
    for choice in ("train_split=train", "val_split=val", "eval_split=train", "batch_size=32", "eval_batch_size=50",
                   "train_transform.resize_long=None", "train_transform.crop=None"):  # fmt: skip
        assert choice in line
    assert ("3 classes from the masks' largest label" in line) != classes_txt


def test_train_aug_is_preferred_and_train_is_evaluated_as_in_voc(tmp_path):
    root = make_shapes_folder(tmp_path / "aug", num_images=12, splits={"train_aug": 1, "train": 0.3, "val": 0.3})
    dm = CustomDataModule(str(root))
    assert (dm.train_split, dm.val_split, dm.eval_split) == ("train_aug", "val", "train")
    assert dm.class_names == list(SHAPES) and dm.name == "aug"
    dm.prepare_data()
    assert len(dm.prototype_dataloader().dataset) == 12


def test_without_val_there_is_no_checkpoint_selection(tmp_path):
    dm = CustomDataModule(str(make_shapes_folder(tmp_path / "t", num_images=6, splits={"train": 1})))
    assert (dm.train_split, dm.val_split, dm.eval_split) == ("train", None, "train")
    assert dm.val_dataloader() == []


def test_large_images_get_the_voc_recipe(tmp_path):
    dm = CustomDataModule(str(make_shapes_folder(tmp_path / "big", num_images=4, size=(300, 500))))
    t = dm.train_transform
    assert (list(t.resize_long), t.crop, t.flip) == ([320, 640], 512, True)
    assert (dm.batch_size, dm.eval_batch_size, dm.num_workers) == (16, 1, 4)  # sizes differ: one at a time


def test_small_images_of_different_sizes_are_padded_to_one_size(tmp_path):
    dm = CustomDataModule(str(make_shapes_folder(tmp_path / "mixed", num_images=8, size=(60, 90))))
    assert dm.train_transform.resize_long is None and dm.train_transform.crop == max(
        max(d["image"].shape[1:]) for d in dm.dataset(dm.train_split)
    )
    assert (dm.batch_size, dm.eval_batch_size) == (32, 1)
    dm.prepare_data()
    assert next(iter(dm.train_dataloader()))["image"].shape[2:] == (dm.train_transform.crop,) * 2


def test_given_settings_win_over_the_automatic_choices(tmp_path, caplog):
    root = make_shapes_folder(tmp_path / "shapes", num_images=8, classes_txt=False)
    with caplog.at_level(logging.INFO, logger="lpcam.data.custom"):
        dm = datamodule("dataset.batch_size=8", "dataset.train_transform.crop=64", "dataset.eval_split=val",
                        "dataset.name=mine", "dataset.class_names=[a,b,c]", root=root)  # fmt: skip
    assert (dm.batch_size, dm.train_transform.crop, dm.eval_split, dm.name) == (8, 64, "val", "mine")
    assert dm.class_names == ["a", "b", "c"]
    assert (dm.eval_batch_size, dm.train_transform.resize_long, dm.train_split) == (50, None, "train")  # still automatic
    assert set(dm.auto_choices) == {"train_split", "val_split", "eval_batch_size", "num_workers", "train_transform.resize_long"}
    line = caplog.records[-1].getMessage()
    assert "given: eval_split=val, batch_size=8, class_names=[a,b,c], train_transform.crop=64" in line


def test_class_count_comes_from_the_masks_or_the_label_file(tmp_path):
    root = make_shapes_folder(tmp_path / "two", num_images=6, classes_txt=False, num_classes=2)
    dm = CustomDataModule(str(root))
    assert dm.class_names == ["class1", "class2"] and dm.num_classes == 2
    dm.prepare_data()
    assert next(iter(dm.test_dataloader()))["label"].shape[1] == 2
    np.save(root / "cls_labels.npy", {f"img{i:03d}": np.eye(4)[i % 4] for i in range(6)}, allow_pickle=True)
    assert CustomDataModule(str(root)).class_names == ["class1", "class2", "class3", "class4"]


def test_layout_errors_name_the_path_and_the_layout(tmp_path):
    from lpcam.errors import input_error_in

    with pytest.raises(DatasetLayoutError, match=r"nowhere: no JPEGImages/ folder; expected the PASCAL VOC layout"):
        CustomDataModule(str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"empty/ImageSets/Segmentation: no split file .*expected the PASCAL VOC layout"):
        CustomDataModule(str(tmp_path / "empty"))
    root = make_shapes_folder(tmp_path / "valonly", num_images=4, splits={"val": 1})
    with pytest.raises(DatasetLayoutError, match=r"no train_aug.txt or train.txt \(found val.txt\); name the training split"):
        CustomDataModule(str(root))
    with pytest.raises(Exception) as unset:  # Hydra's instantiate wraps it; the entry point unwraps it
        datamodule(root="null")
    assert "dataset.root is not set" in str(input_error_in(unset.value))


def test_voc_config_keeps_the_papers_recipe():
    voc = compose_config(["dataset=voc"]).dataset
    assert (voc.train_split, voc.val_split, voc.eval_split, voc.batch_size, voc.eval_batch_size) == ("train_aug", "val", "train", 16, 1)
    assert (list(voc.train_transform.resize_long), voc.train_transform.crop) == ([320, 640], 512)
