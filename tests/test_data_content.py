"""The caches are keyed by the dataset's content, not only its config: a dataset edited
in place never gets a stale classifier or feature pool, an unchanged one hits the cache."""

from __future__ import annotations

import logging
import os

import numpy as np
from hydra.utils import instantiate
from PIL import Image

from lpcam.cache import FeatureCache
from lpcam.data.palette import save_palette_png
from lpcam.pipeline import run


def _datamodule(cfg):
    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    return dm


def _rewrite(path, data: bytes | None = None) -> None:
    """Rewrite a file (the same bytes unless given) with a modification time 2 s later, as an
    editor would on a file system with coarse timestamps."""
    path.write_bytes(path.read_bytes() if data is None else data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def _swap_labels(mask_path) -> None:
    mask = np.asarray(Image.open(mask_path)).copy()
    swapped = mask.copy()
    swapped[mask == 1], swapped[mask == 2] = 2, 1
    save_palette_png(swapped, mask_path)
    _rewrite(mask_path)


def test_the_data_digest_is_stable_and_names_each_kind_of_edit(tiny):
    cfg = tiny()
    dm = _datamodule(cfg)
    base = dm.content
    assert _datamodule(cfg).content == base  # recomputed on unchanged files: the same
    root = dm.root
    train_id = (root / "ImageSets/Segmentation/train_aug.txt").read_text().split()[0]
    edits = {
        "masks": lambda: _swap_labels(root / "SegmentationClass" / f"{train_id}.png"),
        "images": lambda: _rewrite(root / "JPEGImages" / f"{train_id}.jpg"),
        "parts": lambda: _rewrite(root / "SegmentationPart" / f"{train_id}.png"),
        "classes.txt": lambda: _rewrite(root / "classes.txt", b"wolf\nfox\n"),
        "split files": lambda: _rewrite(root / "ImageSets/Segmentation/val.txt", b"\n".join(
            (root / "ImageSets/Segmentation/val.txt").read_bytes().split()[::-1]) + b"\n"),  # same ids, reordered
        "cls_labels.npy": lambda: np.save(root / "cls_labels.npy", {train_id: np.ones(2, np.float32)}, allow_pickle=True),
    }
    features = FeatureCache.for_run(cfg, lambda: base.key)
    for kind, edit in edits.items():
        before = _datamodule(cfg).content
        edit()
        after = _datamodule(cfg).content
        assert after.changed_since(before.parts) == [kind], kind
        assert FeatureCache.for_run(cfg, lambda: after.key).dataset_key != features.dataset_key
    # the evaluation split changes neither the classifier nor the features
    before = _datamodule(cfg).content
    _rewrite(root / "ImageSets/Segmentation/train.txt", b"000000\n")
    assert _datamodule(cfg).content == before


def test_a_dataset_edited_in_place_retrains_and_an_unchanged_one_hits_the_cache(tiny, tmp_path, caplog):
    first = run(tiny(run="a"))
    again = run(tiny(run="b"))  # unchanged data: the cached classifier and features, the same numbers
    assert first["provenance"]["classifier"]["source"] == "trained"
    assert again["provenance"]["classifier"]["source"] == "cache" and again["timings_s"]["train"] == 0
    for method in first["methods"]:
        assert again["methods"][method] == first["methods"][method]
    dm = _datamodule(tiny())
    for mask in sorted((dm.root / "SegmentationClass").glob("*.png")):  # labels 1 and 2 swapped in place
        _swap_labels(mask)
    with caplog.at_level(logging.INFO, logger="lpcam.stages.classifier"):
        assert run(tiny("stage=train", run="c")) is None
    assert "trained with this config, but the dataset's masks changed since" in caplog.text
    assert "reusing" not in caplog.text.replace("not reusing", "")
    entries = sorted(p.name for p in (tmp_path / "cache" / "classifiers").iterdir() if p.is_dir())
    assert len(entries) == 2 and entries[0].split("-")[0] == entries[1].split("-")[0]  # same config, other data
