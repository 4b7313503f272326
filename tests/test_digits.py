"""The handwritten-digits benchmark: masks from real strokes, in the VOC layout, end to end."""

import numpy as np
import pytest

from lpcam.data.digits import HandwrittenDigits
from lpcam.data.voc import VOCSegmentation
from lpcam.pipeline import run

SMALL = dict(num_train=24, num_eval=8, num_val=8, image_size=64, digit_size=(20, 28))


def test_canvases_hold_distinct_digits_masked_by_their_strokes(tmp_path):
    gen = HandwrittenDigits(**SMALL)
    root = gen.write(tmp_path / "digits", progress=False)
    ds = VOCSegmentation(root, "train_aug")
    assert ds.class_names == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    rims = 0
    for i in range(len(ds)):
        item = ds[i]
        mask = item["mask"].numpy()
        present = set(np.unique(mask).tolist()) - {0, 255}
        assert present == {c + 1 for c in item["label"].nonzero().flatten().tolist()}
        assert 1 <= len(present) <= 3
        for c in present:
            assert 20 <= (mask == c).sum() < 0.5 * 28 * 28  # strokes, not boxes
        rims += int((mask == 255).sum() > 0)
        assert not item["parts"].any()  # no part maps for real handwriting
    assert rims == len(ds)  # every digit has its soft rim ignored, as VOC's boundaries


def test_training_and_validation_canvases_use_different_handwriting():
    gen = HandwrittenDigits(**SMALL)
    train, val = gen._sources
    for c in range(10):
        assert len(train[c]) > 3 * len(val[c]) > 0
        flat_train = {t.tobytes() for t in train[c]}
        assert not any(v.tobytes() in flat_train for v in val[c])


def test_digits_config_rejects_bad_parameters():
    with pytest.raises(ValueError, match="digit_size"):
        HandwrittenDigits(image_size=32, digit_size=(28, 40))
    with pytest.raises(ValueError, match="max_objects"):
        HandwrittenDigits(max_objects=11)


def test_digits_benchmark_end_to_end(tmp_path):
    from tests.conftest import compose_config

    cfg = compose_config([
        "dataset=digits", "dataset.generator.num_train=64", "dataset.generator.num_eval=16",
        "dataset.generator.num_val=16", "dataset.generator.image_size=64", "dataset.generator.digit_size=[20,28]",
        "dataset.batch_size=16", "dataset.eval_batch_size=16", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
        "evaluation.scales=[1.0]", "lpcam.k=2", "logger=csv", f"data_dir={tmp_path / 'data'}",
        f"cache.dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}",
    ])  # fmt: skip
    results = run(cfg)
    assert results["dataset"] == "digits"
    assert len(results["methods"]["lpcam_official"]["per_class_iou"]) == 11  # background + ten digits
    assert "part_recall" not in results["methods"]["cam"]  # no part maps
    assert (tmp_path / "run" / "cams.png").is_file()
