"""The real datasets' configs on fixture folders in their layouts: train, prototypes, evaluation."""

from lpcam.data.voc import VOC_CLASSES
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
    counts = results["lpcam"]["prototypes"]
    assert set(counts) == set(VOC_CLASSES)
    # 8 epochs on 40 images: most classes are learnt; an unlearnt one (CAM zero everywhere) gets no
    # prototype and an empty LPCAM map, recorded in the prototypes' stats, rather than a crash
    built = {name for name, c in counts.items() if c["class"] >= 1}
    assert len(built) >= 10
    stats = Prototypes.load(tmp_path / "run" / "prototypes.pt").stats
    assert all(stats[name].get("no_foreground") for name in set(VOC_CLASSES) - built)
    assert 0 < results["methods"]["lpcam"]["best"]["miou"] <= 100
