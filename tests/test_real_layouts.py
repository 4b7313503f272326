"""The real datasets' configs on fixture folders in their layouts: train, prototypes, evaluation."""

import pytest
from hydra.utils import instantiate

from lpcam.data.voc import VOC_CLASSES, DatasetLayoutError
from lpcam.pipeline import run
from lpcam.prototypes.store import Prototypes
from tests.conftest import compose_config
from tests.fixtures import make_voc_fixture

# only what a CPU test must shrink: image and crop sizes, epochs, scales, workers
SMALL_RUN = [
    "dataset.num_workers=0",
    "dataset.train_transform.resize_long=[48,64]",
    "dataset.train_transform.crop=48",
    "dataset.batch_size=8",
    "trainer.max_epochs=8",
    "trainer.enable_progress_bar=false",
    "evaluation.scales=[1.0]",
    "lpcam.k=2",
    "logger=csv",
]


def test_voc_config_on_a_voc2012_layout_fixture(tmp_path):
    make_voc_fixture(tmp_path / "VOC2012", num_images=40)
    cfg = compose_config(
        ["dataset=voc", *SMALL_RUN, f"data_dir={tmp_path}", f"cache.dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}"]
    )
    results = run(cfg)
    assert results["dataset"] == "voc" and results["split"] == "train"
    assert list(results["methods"]["cam"]["per_class_iou"]) == ["background", *VOC_CLASSES]
    counts = results["prototypes"]["counts"]
    assert set(counts) == set(VOC_CLASSES)
    # prototypes from VOC's seed-evaluation split (train, 13 of the 40 images), as the official code
    assert results["prototypes"]["images"]["split"] == "train"
    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    present = {VOC_CLASSES[c] for c, images in enumerate(dm.dataset("train").images_of_class) if images}
    # 8 epochs on 40 images: about half the classes are learnt; an unlearnt one (CAM zero
    # everywhere) or one absent from train gets no prototype and an empty LPCAM map, recorded in
    # the prototypes' stats, rather than a crash
    built = {name for name, c in counts.items() if c["class"] >= 1}
    assert built <= present and len(built) >= len(present) // 2
    stats = Prototypes.load(tmp_path / "run" / "prototypes.pt").stats
    assert all(stats[name].get("no_foreground") for name in set(VOC_CLASSES) - built)
    assert 0 < results["methods"]["lpcam_official"]["best"]["miou"] <= 100


def test_coco_reader_masks_labels_and_per_class_sampling(tmp_path):
    from lpcam.data.coco import CocoDataModule, CocoSegmentation
    from tests.fixtures import make_coco_fixture

    root = make_coco_fixture(tmp_path / "COCO2014")
    ds = CocoSegmentation(root, "train2014")
    assert ds.class_names == ["person", "car", "dog"] and len(ds) == 30  # the unannotated image left out
    first = ds[0]
    mask = first["mask"]
    assert (mask[:6, :6] == 255).all()  # the crowd region is ignored
    assert set(mask.unique().tolist()) - {0, 255} == {c + 1 for c in first["label"].nonzero().flatten().tolist()}
    assert first["label"].sum() >= 1 and first["image"].shape[1:] == mask.shape
    dm = CocoDataModule(str(root), images_per_class=3, seed=0, num_workers=0)
    picked = dm.prototype_indices(ds)
    assert 3 <= len(picked) <= 9 and all(any(p in ds.images_of_class[c] for p in picked) for c in range(3))
    with pytest.raises(DatasetLayoutError, match="annotations/instances_train2014.json"):
        CocoSegmentation(tmp_path / "nowhere", "train2014")


def test_coco_config_on_a_coco2014_layout_fixture(tmp_path):
    from tests.fixtures import make_coco_fixture

    make_coco_fixture(tmp_path / "COCO2014")
    cfg = compose_config(
        ["dataset=coco", "dataset.images_per_class=8", *SMALL_RUN, f"data_dir={tmp_path}",
         f"cache.dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    )
    results = run(cfg)
    assert results["dataset"] == "coco" and results["split"] == "train2014"
    assert list(results["methods"]["lpcam_official"]["per_class_iou"]) == ["background", "person", "car", "dog"]
    assert all(c["class"] >= 1 for c in results["prototypes"]["counts"].values())
    assert 0 < results["methods"]["cam"]["best"]["miou"] <= 100


def test_coco_masks_from_pre_converted_pngs_match_the_annotations(tmp_path):
    from lpcam.data.coco import CocoSegmentation
    from lpcam.data.palette import save_palette_png
    from tests.fixtures import make_coco_fixture

    root = make_coco_fixture(tmp_path / "COCO2014", num_images=6)
    from_annotations = CocoSegmentation(root, "train2014")
    (root / "SegmentationClass" / "train2014").mkdir(parents=True)
    for i, image_id in enumerate(from_annotations.ids):  # what a conversion script writes
        save_palette_png(from_annotations[i]["mask"].numpy().astype("uint8"), root / "SegmentationClass" / "train2014" / f"{image_id}.png")
    from_pngs = CocoSegmentation(root, "train2014", mask_dir=str(root / "SegmentationClass"))
    for i in range(len(from_pngs)):
        assert (from_pngs[i]["mask"] == from_annotations[i]["mask"]).all()
    (root / "SegmentationClass" / "train2014" / f"{from_pngs.ids[0]}.png").unlink()
    with pytest.raises(DatasetLayoutError, match="pre-converted mask not found"):
        from_pngs[0]
