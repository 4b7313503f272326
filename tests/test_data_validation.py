"""Bad data gets one line naming the file, before training (the data-input checks).

Each test feeds one fault to a small folder in the VOC layout (tests/fixtures.py) and checks the
error the preflight (``SegmentationDataModule.prepare_data``) raises: its type, the file and the
split file it names, the values; the command-line test checks the exit status and that no
traceback is printed. The fuzz test feeds seeded random corruptions through the whole data path.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from lpcam.data.checks import BadClasses, BadImage, BadMask, BadSplit, DataError
from lpcam.data.custom import CustomDataModule
from lpcam.data.datamodule import SegmentationDataModule
from lpcam.data.palette import save_palette_png
from lpcam.data.transforms import TrainTransform
from lpcam.data.voc import DatasetLayoutError
from lpcam.errors import InputError
from tests.conftest import TINY, compose_config
from tests.fixtures import make_coco_fixture, make_voc_fixture

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["ant", "bee", "cod"]


def voc_folder(root: Path, num_images: int = 12) -> Path:
    """12 images of 3 classes (image i shows class i % 3), splits train_aug (all), train (first 4), val (last 4)."""
    make_voc_fixture(root, num_images=num_images, num_classes=len(CLASSES))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def datamodule(root: Path, **kwargs) -> SegmentationDataModule:
    settings = dict(train_split="train_aug", val_split="val", eval_split="train", batch_size=4, eval_batch_size=4)
    return SegmentationDataModule(str(root), **{**settings, **kwargs})


def image(root: Path, i: int) -> Path:
    return root / "JPEGImages" / f"2007_{i:06d}.jpg"


def mask(root: Path, i: int) -> Path:
    return root / "SegmentationClass" / f"2007_{i:06d}.png"


def refused(dm: SegmentationDataModule, error: type[Exception] = InputError) -> str:
    """The preflight's message, checked to be one line."""
    with pytest.raises(error) as caught:
        dm.prepare_data()
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# ---- images -------------------------------------------------------------------------------------

IMAGE_FAULTS = {
    "truncated": (lambda p: truncate(p, 0.6), "unreadable JPEG (image file is truncated"),
    "zero_byte": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "text_named_jpg": (lambda p: p.write_text("this is not an image\n"), "not an image (PIL cannot identify its format); it starts like a text file"),
    "16_bit": (lambda p: Image.fromarray(np.full((60, 60), 40000, np.uint16)).save(p, format="PNG"), "a PNG in mode I;16"),
}


@pytest.mark.parametrize("fault", list(IMAGE_FAULTS))
def test_a_bad_image_is_named_with_its_split_file_before_training(tmp_path, fault):
    root = voc_folder(tmp_path / "voc")
    damage, expected = IMAGE_FAULTS[fault]
    damage(image(root, 5))  # in train_aug only
    message = refused(datamodule(root), BadImage)
    assert message.startswith(f"{image(root, 5)}: {expected}")
    assert f"(image 2007_000005 of {root / 'ImageSets/Segmentation/train_aug.txt'})" in message
    assert message.endswith("dataset.bad_images=skip leaves such images out")


def test_png_named_jpg_grey_and_rgba_images_are_read_as_rgb_and_counted(tmp_path):
    root = voc_folder(tmp_path / "voc")
    Image.open(image(root, 0)).save(image(root, 0), format="PNG")  # a PNG under a .jpg name: fine
    rgb = np.asarray(Image.open(image(root, 1)).convert("RGB"))
    grey = Image.open(image(root, 2)).convert("L")
    grey.save(image(root, 2), format="JPEG")
    alpha = np.dstack([rgb, np.where(np.arange(rgb.shape[1]) % 2, 0, 255)[None].repeat(rgb.shape[0], 0)]).astype(np.uint8)
    Image.fromarray(alpha, "RGBA").save(image(root, 1), format="PNG")
    dm = datamodule(root)
    dm.prepare_data()
    assert dm.data_report()["converted_to_rgb"] == {"L": 1, "RGBA": 1}  # each counted once, though in two splits
    ds = dm.dataset("train_aug")
    assert ds[0]["image"].shape[0] == 3
    g = ds[2]["image"]
    assert (g[0] == g[1]).all() and (g[1] == g[2]).all()  # grey replicated
    # alpha dropped, not composited: the colour stays where the pixel is fully transparent
    assert np.array_equal((ds[1]["image"] * 255).round().byte().permute(1, 2, 0).numpy(), rgb)


def test_bad_images_skip_leaves_them_out_with_a_warning(tmp_path, caplog):
    root = voc_folder(tmp_path / "voc")
    truncate(image(root, 1))  # in train_aug and train
    image(root, 10).write_bytes(b"")  # in train_aug and val
    dm = datamodule(root, bad_images="skip", train_transform=TrainTransform(crop=48))  # one size: batches stack
    with caplog.at_level(logging.WARNING, logger="lpcam.data.datamodule"):
        dm.prepare_data()
    assert dm.skipped == {"train_aug": ["2007_000001", "2007_000010"], "train": ["2007_000001"], "val": ["2007_000010"]}
    assert dm.data_report()["skipped_count"] == 2
    assert len(dm.dataset("train_aug")) == 10 and len(dm.dataset("train")) == 3 and len(dm.dataset("val")) == 3
    assert "2007_000001" not in dm.dataset("train").ids
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 4 and all("left out (dataset.bad_images=skip)" in w for w in warned)
    assert any(str(image(root, 10)) in w and "val.txt" in w for w in warned)
    for batch in dm.train_dataloader():  # what is left trains
        assert batch["image"].shape[1] == 3


def test_skip_never_skips_a_missing_image_or_a_bad_mask(tmp_path):
    root = voc_folder(tmp_path / "voc")
    image(root, 3).unlink()
    assert "image not found" in refused(datamodule(root, bad_images="skip"), DatasetLayoutError)
    root = voc_folder(tmp_path / "voc2")
    truncate(mask(root, 3))
    assert f"{mask(root, 3)}: unreadable mask" in refused(datamodule(root, bad_images="skip"), BadMask)


def test_skipping_every_image_of_a_split_is_an_error(tmp_path):
    root = voc_folder(tmp_path / "voc")
    for i in range(8, 12):  # the whole val split
        image(root, i).write_text("x")
    message = refused(datamodule(root, bad_images="skip"), BadSplit)
    assert message.startswith(f"{root / 'ImageSets/Segmentation/val.txt'}: no readable image in split val (4 left out")


def test_an_image_failing_inside_a_dataloader_worker_is_named_in_one_line(tmp_path):
    """What the preflight cannot see (here: it is not run) still fails naming the file, not as a
    worker's traceback."""
    root = voc_folder(tmp_path / "voc")
    truncate(image(root, 6))
    dm = datamodule(root, num_workers=1, eval_batch_size=1)
    with pytest.raises(BadImage) as caught:
        for _ in dm.prototype_dataloader():
            pass
    message = str(caught.value)
    assert message.startswith(f"{image(root, 6)}: unreadable image (image file is truncated")
    assert "\n" not in message and "worker" not in message


# ---- masks --------------------------------------------------------------------------------------


def test_missing_mask_in_an_evaluated_split_is_named(tmp_path):
    root = voc_folder(tmp_path / "voc")
    mask(root, 9).unlink()  # in val (and train_aug)
    message = refused(datamodule(root), DatasetLayoutError)
    assert message.startswith(f"{mask(root, 9)}: mask not found") and "(image 2007_000009 of" in message


def test_mask_of_another_size_than_its_image_is_named(tmp_path):
    root = voc_folder(tmp_path / "voc")
    w, h = Image.open(image(root, 2)).size
    save_palette_png(np.zeros((h + 3, w), np.uint8), mask(root, 2))
    message = refused(datamodule(root), BadMask)
    assert message.startswith(f"{mask(root, 2)}: mask is {w}x{h + 3} px, its image 2007_000002.jpg {w}x{h} px")


@pytest.mark.parametrize("index, split", [(1, "train_aug"), (9, "train_aug")], ids=["train", "val"])
def test_mask_values_outside_the_classes_are_named_with_the_values(tmp_path, index, split):
    root = voc_folder(tmp_path / "voc")
    values = np.asarray(Image.open(mask(root, index))).copy()
    values[0, :3] = [7, 9, 7]
    save_palette_png(values, mask(root, index))
    message = refused(datamodule(root), BadMask)
    assert message.startswith(f"{mask(root, index)}: mask values 7, 9 outside the classes 0..3 and 255 (ignore)")
    assert f"of {root / 'ImageSets/Segmentation' / split}.txt" in message


def test_a_validation_only_stray_label_is_caught(tmp_path):
    """The issue's case: a label outside the classes in a mask only the validation split lists."""
    root = voc_folder(tmp_path / "voc")
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000011\nextra\n")
    shutil.copy(image(root, 11), root / "JPEGImages/extra.jpg")
    values = np.asarray(Image.open(mask(root, 11))).copy()
    values[-1, -1] = 4
    save_palette_png(values, root / "SegmentationClass/extra.png")
    message = refused(datamodule(root), BadMask)
    assert message.startswith(f"{root / 'SegmentationClass/extra.png'}: mask values 4 outside the classes 0..3")
    assert "(image extra of" in message and "val.txt" in message


def test_colour_mask_is_refused(tmp_path):
    root = voc_folder(tmp_path / "voc")
    Image.open(mask(root, 0)).convert("RGB").save(mask(root, 0))
    assert refused(datamodule(root), BadMask).startswith(f"{mask(root, 0)}: a colour mask (mode RGB)")


def test_coco_images_and_pre_converted_masks_share_the_checks(tmp_path):
    from lpcam.data.coco import CocoDataModule, CocoSegmentation

    root = make_coco_fixture(tmp_path / "COCO2014", num_images=9)
    masks = tmp_path / "masks"
    for split in ("train2014", "val2014"):  # what a conversion script writes
        ds = CocoSegmentation(root, split)
        (masks / split).mkdir(parents=True)
        for i, image_id in enumerate(ds.ids):
            save_palette_png(ds[i]["mask"].numpy().astype(np.uint8), masks / split / f"{image_id}.png")
    dm = CocoDataModule(str(root), mask_dir=str(masks), num_workers=0)
    dm.prepare_data()
    assert dm.checks["train2014"].images == 9 and dm.checks["val2014"].images == 3
    bad = masks / "val2014" / "10002.png"
    values = np.asarray(Image.open(bad)).copy()
    values[0, 0] = 200
    save_palette_png(values, bad)
    message = refused(CocoDataModule(str(root), mask_dir=str(masks), num_workers=0), BadMask)
    assert message.startswith(f"{bad}: mask values 200 outside the classes 0..3")
    assert f"(image 10002 of {root / 'annotations/instances_val2014.json'})" in message
    truncate(root / "train2014" / "COCO_train2014_000000000004.jpg")
    dm = CocoDataModule(str(root), num_workers=0, bad_images="skip")  # masks from the annotations
    dm.prepare_data()
    assert dm.skipped == {"train2014": ["4"]} and len(dm.dataset("train2014")) == 8
    assert 4 not in dm.dataset("train2014").ids and sum(map(len, dm.dataset("train2014").images_of_class)) > 0


# ---- splits and classes -------------------------------------------------------------------------


def test_empty_or_binary_split_file_is_named(tmp_path):
    root = voc_folder(tmp_path / "voc")
    split = root / "ImageSets/Segmentation/val.txt"
    split.write_text("\n  \n")
    assert refused(datamodule(root), DatasetLayoutError) == f"{split}: the split lists no image ids"
    split.write_bytes(bytes(range(128, 256)))
    assert refused(datamodule(root), BadSplit) == f"{split}: not a text file; expected image ids, one per line"


def test_duplicate_class_names_are_refused(tmp_path):
    root = voc_folder(tmp_path / "voc")
    (root / "classes.txt").write_text("ant\nbee\nant\n")
    message = refused(datamodule(root), BadClasses)
    assert message == f"{root / 'classes.txt'}: class name 'ant' appears twice; each class needs its own name (line = mask value)"
    with pytest.raises(InputError, match=r"dataset.class_names=\['a', 'b', 'a'\]: expected null, or a list of distinct"):
        datamodule(root, class_names=["a", "b", "a"])


def test_a_class_without_a_training_image_is_named(tmp_path):
    root = voc_folder(tmp_path / "voc")
    (root / "classes.txt").write_text("ant\nbee\ncod\ndab\n")  # mask value 4 appears nowhere
    message = refused(datamodule(root), BadClasses)
    assert message.startswith(f"class 'dab' has no image in the training split {root / 'ImageSets/Segmentation/train_aug.txt'}")
    assert message.endswith(f"remove it from {root / 'classes.txt'}")
    # only the validation split shows it: still no training image
    values = np.asarray(Image.open(mask(root, 10))).copy()
    values[values == 2] = 4
    save_palette_png(values, mask(root, 10))
    (root / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(f"2007_{i:06d}" for i in range(8)) + "\n")
    assert "class 'dab' has no image" in refused(datamodule(root), BadClasses)


def test_the_generated_benchmark_passes_the_preflight(tmp_path, monkeypatch):
    cfg = compose_config([*TINY, f"data_dir={tmp_path}"])
    dm = instantiate(cfg.dataset)
    dm.check_cache_dir = tmp_path / "checks"
    dm.prepare_data()
    assert {s: c.images for s, c in dm.checks.items()} == {"train_aug": 64, "val": 16, "train": 16}
    assert dm.data_report() == {"bad_images": "error", "skipped_images": {}, "skipped_count": 0, "converted_to_rgb": {}}
    (cache,) = (tmp_path / "checks").glob("*.json")
    entries = json.loads(cache.read_text())["files"]
    assert len(entries) == 2 * 80  # an image and a mask per distinct file
    # a rerun reads nothing: every fact comes from the cache (a file changed in place is read again)
    dm = instantiate(cfg.dataset)
    dm.check_cache_dir = tmp_path / "checks"
    truncate(dm.root / "JPEGImages" / "000070.jpg")
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(Path(path).name) or real_open(path, *a, **k))
    with pytest.raises(BadImage, match="000070.jpg: unreadable JPEG"):
        dm.prepare_data()
    assert opened == ["000070.jpg"]


# ---- dataset.* settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.batch_size=0", "dataset.batch_size=0: expected a whole number ≥ 1"),
        ("dataset.eval_batch_size=2.5", "dataset.eval_batch_size=2.5: expected a whole number ≥ 1"),
        ("dataset.num_workers=-1", "dataset.num_workers=-1: expected a whole number ≥ 0"),
        ("dataset.train_split=''", "dataset.train_split='': expected a split name"),
        ("dataset.val_split=''", "dataset.val_split='': expected a split name, or null for no checkpoint selection"),
        ("dataset.eval_split=' train'", "dataset.eval_split=' train': expected a split name"),
        ("dataset.name=''", "dataset.name='': expected a non-empty name"),
        ("dataset.bad_images=ignore", "dataset.bad_images='ignore': expected error or skip"),
        ("dataset.generator.num_train=0", "dataset.generator.num_train=0: expected a whole number ≥ 1"),
        ("dataset.generator.image_size=8", "dataset.generator.image_size=8: expected a whole number ≥ 32"),
    ],
)
def test_impossible_dataset_settings_are_refused_before_any_work(tiny, tmp_path, override, message):
    from lpcam.pipeline import run

    with pytest.raises(InputError) as caught:
        run(tiny(override, run="bad"))
    assert str(caught.value).startswith(message)
    assert not (tmp_path / "data").exists()  # refused before generating or training anything


def test_custom_and_coco_settings_are_refused_before_the_folder_is_read(tmp_path):
    from lpcam.data.coco import CocoDataModule
    from lpcam.errors import input_error_in

    with pytest.raises(Exception) as caught:  # nowhere: the setting is named, not the missing folder
        instantiate(compose_config(["dataset=custom", f"dataset.root={tmp_path / 'nowhere'}", "dataset.batch_size=0"]).dataset)
    assert str(input_error_in(caught.value)) == "dataset.batch_size=0: expected a whole number ≥ 1"
    with pytest.raises(InputError, match=r"dataset.images_per_class=0: expected a whole number ≥ 1, or null"):
        CocoDataModule(str(tmp_path / "nowhere"), images_per_class=0)


# ---- the command line and results.json -------------------------------------------------------------


def test_command_line_names_a_truncated_image_in_one_line_before_training(tmp_path):
    cfg = compose_config([*TINY, f"data_dir={tmp_path / 'data'}"])
    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    bad = dm.root / "JPEGImages" / "000003.jpg"
    truncate(bad)
    proc = subprocess.run(
        [sys.executable, "-m", "lpcam.run", *TINY, f"data_dir={tmp_path / 'data'}", f"cache.dir={tmp_path / 'cache'}",
         "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],  # fmt: skip
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("lpcam: error:")]
    assert line.startswith(f"lpcam: error: {bad}: unreadable JPEG (image file is truncated")
    assert f"(image 000003 of {dm.root / 'ImageSets/Segmentation/train_aug.txt'})" in line
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "cache" / "classifiers").exists()
    assert json.loads((tmp_path / "run" / "error.json").read_text())["type"] == "BadImage"


def test_skipped_images_are_counted_in_results_json(tiny, tmp_path):
    from lpcam.pipeline import run

    cfg = tiny("dataset.bad_images=skip")
    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    (dm.root / "JPEGImages" / "000005.jpg").write_bytes(b"not a jpeg")  # in train_aug and train
    results = run(cfg)
    assert results["data"]["skipped_images"] == {"train_aug": ["000005"], "train": ["000005"]}
    assert results["data"]["skipped_count"] == 1 and results["data"]["bad_images"] == "skip"
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["data"] == results["data"]


# ---- fuzz ---------------------------------------------------------------------------------------


def _flip_bytes(rng: random.Random, path: Path, count: int) -> None:
    data = bytearray(path.read_bytes())
    for _ in range(count):
        data[rng.randrange(len(data) // 4, len(data))] ^= 1 << rng.randrange(8)  # past most of the header
    path.write_bytes(bytes(data))


def _rewrite_mask(path: Path, change) -> None:
    values = np.asarray(Image.open(path)).copy()
    save_palette_png(change(values), path)


# name -> (what it corrupts, whether the run must then refuse the data with bad_images=error, the corruption)
CORRUPTIONS = {
    "image_truncated": ("image", True, lambda rng, p: truncate(p, rng.uniform(0.2, 0.9))),
    "image_zero": ("image", True, lambda rng, p: p.write_bytes(b"")),
    "image_random": ("image", True, lambda rng, p: p.write_bytes(rng.randbytes(rng.randrange(1, 3000)))),
    "image_text": ("image", True, lambda rng, p: p.write_text("GIF89a? no: some text\n" * rng.randrange(1, 50))),
    "image_deleted": ("image", True, lambda rng, p: p.unlink()),
    "image_flipped": ("image", False, lambda rng, p: _flip_bytes(rng, p, rng.randrange(1, 20))),
    "image_grey": ("image", False, lambda rng, p: Image.open(p).convert("L").save(p, format="JPEG")),
    "image_rgba_png": ("image", False, lambda rng, p: Image.open(p).convert("RGBA").save(p, format="PNG")),
    "image_png_truncated": ("image", True, lambda rng, p: (Image.open(p).convert("RGB").save(p, format="PNG"), truncate(p, rng.uniform(0.1, 0.9)))),
    "mask_stray": ("mask", True, lambda rng, p: _rewrite_mask(p, lambda v: np.where(v == 0, rng.randrange(4, 255), v).astype(np.uint8))),
    "mask_size": ("mask", True, lambda rng, p: _rewrite_mask(p, lambda v: v[: -rng.randrange(1, 5)])),
    "mask_rgb": ("mask", True, lambda rng, p: Image.open(p).convert("RGB").save(p)),
    "mask_truncated": ("mask", True, lambda rng, p: truncate(p, rng.uniform(0.1, 0.9))),
    "mask_zero": ("mask", True, lambda rng, p: p.write_bytes(b"")),
    "mask_deleted": ("mask", True, lambda rng, p: p.unlink()),
    "mask_flipped": ("mask", False, lambda rng, p: _flip_bytes(rng, p, rng.randrange(1, 5))),
    "split_empty": ("split", True, lambda rng, p: p.write_text(rng.choice(["", "\n", "  \n\t\n"]))),
    "split_binary": ("split", True, lambda rng, p: p.write_bytes(b"\xff\xfe" + rng.randbytes(200))),
    "split_unknown_id": ("split", True, lambda rng, p: p.write_text(p.read_text() + "no_such_image\n")),
    "split_cut": ("split", True, lambda rng, p: p.write_text(p.read_text()[: -rng.randrange(3, 8)])),
    "split_duplicated": ("split", False, lambda rng, p: p.write_text(p.read_text() * 2)),
    "split_deleted": ("split", True, lambda rng, p: p.unlink()),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return voc_folder(tmp_path_factory.mktemp("fuzz") / "template")


def _load_everything(dm: SegmentationDataModule) -> None:
    dm.prepare_data()
    for split in dict.fromkeys(s for s in (dm.train_split, dm.val_split, dm.eval_split) if s):
        for augment in (False, True) if split == dm.train_split else (False,):
            dataset = dm.dataset(split, augment=augment)
            for i in range(len(dataset)):
                item = dataset[i]
                assert item["image"].shape[1:] == item["mask"].shape


@pytest.mark.parametrize("seed", range(6))
def test_fuzz_corrupted_files_give_only_the_documented_errors(template, tmp_path, seed):
    """Seeded random corruptions of images, masks and split files, through the preflight and the
    loading of every item (VOC reader; the custom datamodule too, which reads the folder when
    built): nothing but an InputError whose one line names a corrupted file; and every
    corruption that makes the data unusable is refused."""
    rng = random.Random(seed)
    outcomes = []
    for trial in range(12):
        root = tmp_path / f"t{trial}"
        shutil.copytree(template, root)
        names = rng.sample(sorted(CORRUPTIONS), rng.randrange(1, 3))
        custom = rng.random() < 0.4  # else the VOC reader's datamodule
        hit, fatal = [], False
        for name in names:
            kind, must_fail, corrupt = CORRUPTIONS[name]
            if kind == "split":
                path = root / "ImageSets/Segmentation" / f"{rng.choice(['train_aug', 'train', 'val'])}.txt"
            else:
                path = (image if kind == "image" else mask)(root, rng.randrange(12))
            if path.name in hit:
                continue  # one corruption per file: a second could undo the first (a deletion)
            corrupt(rng, path)
            hit.append(path.name)
            optional = custom and name == "split_deleted" and path.name == "val.txt"  # custom: no val, no selection
            fatal = fatal or (must_fail and not optional)
        transform = TrainTransform(resize_long=(40, 70), crop=48, seed=seed)
        try:
            if custom:
                if rng.random() < 0.5:
                    (root / "classes.txt").unlink()  # class count from the masks' largest label
                dm = CustomDataModule(str(root), train_split="train_aug", eval_split="train", num_workers=0, train_transform=transform)
            else:
                dm = datamodule(root, train_transform=transform)
            _load_everything(dm)
        except InputError as err:
            message = str(err)
            assert "\n" not in message, (names, message)
            assert any(name in message for name in hit), (names, message)
            outcomes.append(type(err).__name__)
        except Exception as err:  # noqa: BLE001 - the point: nothing else may come out
            pytest.fail(f"seed {seed} trial {trial} {names}: {type(err).__name__}: {err}")
        else:
            assert not fatal, f"seed {seed} trial {trial}: {names} corrupt the data, yet it was accepted"
            outcomes.append("accepted")
    assert len(set(outcomes)) >= 2  # both refused and accepted data, every seed


def test_data_errors_are_input_errors_and_value_errors():
    """The entry point prints InputErrors as one line; the older ValueError checks still catch them."""
    for error in (BadImage, BadMask, BadSplit, BadClasses):
        assert issubclass(error, DataError) and issubclass(error, InputError) and issubclass(error, ValueError)


def test_bad_images_error_leaves_the_cache_keys_as_before_and_skip_changes_them():
    """``error`` trains only on data with no bad image (what skip would then train on too): left out
    of the classifier and feature keys, so caches made before the setting existed still hold."""
    from lpcam.cache import classifier_key, training_config

    default = compose_config(["run_dir=/tmp/r"])
    assert "bad_images" in default.dataset and "bad_images" not in training_config(default)["dataset"]
    skip = compose_config(["run_dir=/tmp/r", "dataset.bad_images=skip"])
    assert training_config(skip)["dataset"]["bad_images"] == "skip"
    assert classifier_key(skip, "data") != classifier_key(default, "data")
