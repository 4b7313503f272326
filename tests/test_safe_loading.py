"""Files read back never run code, and damaged or foreign ones are refused in one line:
checkpoints, prototypes files, the feature cache, ``cls_labels.npy`` and exported maps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lpcam.cache import FeatureCache, tensors_digest, weights_digest
from lpcam.data.voc import VOCSegmentation
from lpcam.errors import InputError
from lpcam.export.formats import read_irn
from lpcam.models.backbones import small_resnet
from lpcam.models.classifier import Classifier
from lpcam.prototypes.settings import PrototypeSettings
from lpcam.prototypes.store import IncompatiblePrototypes, Prototypes
from lpcam.safe_load import UnreadableFile, load_label_file, load_npy, torch_load
from lpcam.stages.prototypes import pooled_features
from tests.fixtures import make_voc_fixture


class RunsCode:
    """Unpickles into a call of ``exec``: what a crafted file does. Harmless here: it writes a
    marker file, so a test sees whether loading ran it."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def crafted_npy(path, marker) -> None:
    np.save(path, {"2007_000000": RunsCode(marker)}, allow_pickle=True)


def crafted_torch(path, marker) -> None:
    torch.save({"format_version": 1, "payload": RunsCode(marker)}, path)


def test_the_crafted_files_do_run_code_when_loaded_the_unsafe_way(tmp_path):
    """The fixtures of this file are live: np.load(allow_pickle=True) and torch.load(weights_only=False)
    run them (so the refusals below are real)."""
    marker = tmp_path / "marker"
    crafted_npy(tmp_path / "labels.npy", marker)
    np.load(tmp_path / "labels.npy", allow_pickle=True)
    assert marker.read_text() == "ran"
    marker.unlink()
    crafted_torch(tmp_path / "p.pt", marker)
    torch.load(tmp_path / "p.pt", weights_only=False)
    assert marker.read_text() == "ran"


def test_a_crafted_cls_labels_npy_is_refused_without_running_code(tmp_path):
    root = make_voc_fixture(tmp_path / "voc", num_images=6, num_classes=3)
    marker = tmp_path / "marker"
    crafted_npy(root / "cls_labels.npy", marker)
    with pytest.raises(UnreadableFile, match=r"cls_labels.npy: refused: it would call builtins.exec") as err:
        VOCSegmentation(root, "train", ["a", "b", "c"])
    assert "\n" not in str(err.value) and not marker.exists()


def test_irn_cls_labels_npy_reads_as_np_load_reads_it(tmp_path):
    """IRN's format: np.save of a dict {image id (str or numpy int): float multi-hot} (numpy scalars
    and dtypes inside): read without pickle's code path, equal to np.load's reading."""
    labels = {"2007_000032": np.array([1, 0, 1], np.float32), np.int32(2007000033): np.zeros(3), "x": np.float64(2.5)}
    np.save(tmp_path / "cls_labels.npy", labels, allow_pickle=True)
    got = load_label_file(tmp_path / "cls_labels.npy")
    expected = np.load(tmp_path / "cls_labels.npy", allow_pickle=True).item()
    assert list(got) == list(expected)
    for k in expected:
        assert np.array_equal(got[k], expected[k]) and np.asarray(got[k]).dtype == np.asarray(expected[k]).dtype
    np.save(tmp_path / "plain.npy", np.arange(5))  # an array without pickle reads as itself
    assert np.array_equal(load_npy(tmp_path / "plain.npy"), np.arange(5))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable .npy file"),
        (os.urandom(64), "not a readable .npy file"),
        ("truncated", "not a readable .npy file"),
        ("list", "expected np.save of a non-empty dict"),
    ],
)
def test_a_damaged_label_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "cls_labels.npy"
    if content == "truncated":
        np.save(path, {f"{i}": np.ones(4) for i in range(50)}, allow_pickle=True)
        path.write_bytes(path.read_bytes()[:-100])
    elif content == "list":
        np.save(path, np.array([[1, 0], [0, 1]]))
    else:
        path.write_bytes(content)
    with pytest.raises(UnreadableFile, match=message) as err:
        load_label_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_crafted_exported_maps_are_refused_and_real_ones_read(tmp_path):
    from lpcam.export.formats import ImageMaps, make_format

    maps = ImageMaps("img", np.array([1]), np.ones((1, 8, 8), np.float32), np.ones((1, 2, 2), np.float32))
    make_format("irn").write(tmp_path, maps)  # pickles a torch tensor (IRN's format), into tmp_path/irn/
    keys, high_res = read_irn(tmp_path / "irn", "img")
    assert keys.tolist() == [1] and high_res.shape == (1, 8, 8)
    marker = tmp_path / "marker"
    np.save(tmp_path / "evil.npy", {"keys": np.array([0]), "cam": RunsCode(marker)}, allow_pickle=True)
    with pytest.raises(UnreadableFile, match="builtins.exec"):
        read_irn(tmp_path, "evil")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "tensor", "dict", "checkpoint_without", "crafted", "shapes"])
def test_a_prototypes_file_that_is_not_one_is_refused_in_one_line(tmp_path, kind):
    path, marker = tmp_path / "p.pt", tmp_path / "marker"
    good = Prototypes([torch.ones(2, 4)], [torch.zeros(1, 4)], {"dim": 4})
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        good.save(path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "dict":
        torch.save({"state_dict": {}}, path)
    elif kind == "checkpoint_without":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"num_classes": 2}}, path)
    elif kind == "crafted":
        crafted_torch(path, marker)
    else:
        d = good.to_dict()
        d["context_protos"] = [torch.zeros(1, 5)]  # another feature size than the class prototypes
        torch.save(d, path)
    with pytest.raises(InputError) as err:
        Prototypes.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value) and not marker.exists()


def test_checkpoints_are_loaded_with_weights_only_and_refused_when_crafted(tiny, tmp_path):
    """A crafted ``ckpt_path`` or ``lpcam.prototypes_path`` is refused before any training, without
    running; a real checkpoint (hyperparameters and all) loads with weights_only=True."""
    from lpcam.pipeline import run

    marker = tmp_path / "marker"
    crafted_torch(tmp_path / "evil.ckpt", marker)
    for override in (f"ckpt_path={tmp_path / 'evil.ckpt'}", f"lpcam.prototypes_path={tmp_path / 'evil.ckpt'}"):
        with pytest.raises(UnreadableFile, match=r"evil.ckpt: refused: it holds a Python object \(.*exec\)"):
            run(tiny(override, run="evil"))
        assert not marker.exists() and not (tmp_path / "evil" / "checkpoints").exists()
    assert run(tiny("stage=train", run="train")) is None
    checkpoint = torch_load(tmp_path / "train" / "checkpoints" / "best.ckpt", "checkpoint")  # weights_only=True
    assert checkpoint["hyper_parameters"]["num_classes"] == 2 and "lpcam_prototypes" in checkpoint
    assert Prototypes.load(tmp_path / "train" / "checkpoints" / "best.ckpt").meta["k"] == 3  # the carried ones


def test_a_crafted_feature_cache_entry_is_refused_without_running(tmp_path):
    model = Classifier(small_resnet(widths=[8, 8, 8], blocks=[1, 1, 1], strides=[2, 2, 1], stem_width=8), num_classes=2)
    settings, cache, marker = PrototypeSettings(k=2), FeatureCache(tmp_path / "cache", "data"), tmp_path / "marker"
    entry = cache.path(weights_digest(model), settings.sampling_dict())
    entry.parent.mkdir(parents=True)
    crafted_torch(entry, marker)
    with pytest.raises(UnreadableFile, match="feature cache entry=.*refused"):
        pooled_features(model, [], 2, settings, cache, progress=False)
    assert not marker.exists()


def test_the_command_line_refuses_a_crafted_or_random_prototypes_file_in_one_line(tmp_path):
    marker = tmp_path / "marker"
    crafted_torch(tmp_path / "evil.pt", marker)
    (tmp_path / "random.pt").write_bytes(os.urandom(2048))
    for name in ("evil.pt", "random.pt"):
        proc = subprocess.run(
            [sys.executable, "-m", "lpcam.run", f"lpcam.prototypes_path={tmp_path / name}", f"data_dir={tmp_path / 'data'}",
             "dataset.generator.num_train=16", "dataset.generator.num_eval=4", "dataset.generator.num_val=4",
             "logger=none", f"cache.dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"],  # fmt: skip
            capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert f"lpcam: error: lpcam.prototypes_path={tmp_path / name}: " in proc.stderr
        assert "Traceback" not in proc.stderr and not marker.exists()
        assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training
        assert json.loads((tmp_path / "run" / "error.json").read_text())["input_error"] is True


# --- prototypes keyed by the classifier that built them ---------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [("backbone", "resnet50"), ("layer", "layer4"), ("dim", 8), ("class_names", ["a", "c"])],
)
def test_prototypes_for_another_feature_space_or_class_list_are_refused_naming_what_differs(field, value):
    run = {"backbone": "small_resnet", "layer": "layer3", "dim": 4, "class_names": ["a", "b"]}
    protos = Prototypes([torch.ones(2, 4), torch.ones(1, 4)], [torch.zeros(1, 4)] * 2, dict(run))
    protos.check_compatible(*run.values(), "p.pt")
    with pytest.raises(IncompatiblePrototypes, match=f"p.pt: prototypes were built with {field}=.* this run has {field}="):
        protos.check_compatible(*{**run, field: value}.values(), "p.pt")
    damaged = Prototypes([torch.ones(2, 4)], [torch.zeros(1, 4)], dict(run))  # one class's prototypes, two names
    with pytest.raises(IncompatiblePrototypes, match="a damaged prototypes file"):
        damaged.check_compatible(*run.values(), "p.pt")


def test_prototypes_of_other_weights_are_refused_and_results_report_the_files_settings(tiny, tmp_path, caplog):
    """Two classifiers of one architecture (4 and 2 epochs): the prototypes of the first are
    refused with the second, naming both weight digests; results.json reports the file's K, not
    the run's; a file from before the digest was recorded is accepted with a warning."""
    from lpcam.pipeline import run

    off = ("stage=train", "cache.classifier=false", "cache.features=false")
    assert run(tiny(*off, "lpcam.k=2", run="a")) is None and run(tiny(*off, "trainer.max_epochs=2", run="b")) is None
    a_ckpt, b_ckpt = (tmp_path / r / "checkpoints" / "best.ckpt" for r in ("a", "b"))
    a_protos = tmp_path / "a" / "prototypes.pt"
    a_state = torch_load(a_ckpt, "checkpoint")["state_dict"]
    assert Prototypes.load(a_protos).meta["weights"] == tensors_digest(sorted(a_state.items()))  # = weights_digest

    same = run(tiny(f"ckpt_path={a_ckpt}", f"lpcam.prototypes_path={a_protos}", run="same"))  # the run's K is 3
    assert same["prototypes"]["settings"]["k"] == 2 and same["provenance"]["prototypes"]["source"] == "file"
    assert all(c["class"] <= 2 for c in same["prototypes"]["counts"].values())

    with pytest.raises(IncompatiblePrototypes, match=r"built by a classifier with weights \w+, this run's classifier has weights \w+"):
        run(tiny(f"ckpt_path={b_ckpt}", f"lpcam.prototypes_path={a_protos}", run="other"))
    assert not (tmp_path / "other" / "results.json").exists()

    old = torch_load(a_protos, "p")
    del old["meta"]["weights"]
    torch.save(old, tmp_path / "old.pt")
    with caplog.at_level("WARNING", logger="lpcam.prototypes.store"):
        accepted = run(tiny(f"ckpt_path={b_ckpt}", f"lpcam.prototypes_path={tmp_path / 'old.pt'}", run="old"))
    assert "do not record which classifier built them" in caplog.text and accepted["prototypes"]["settings"]["k"] == 2


def test_a_run_given_prototypes_and_training_evaluates_the_best_epoch_not_the_last(tiny, tmp_path, monkeypatch):
    """With lpcam.prototypes_path no PrototypeCallback runs; the classifier must still be the best
    checkpoint's. Validation loss is made to rise, so the best epoch is the first of four."""
    from lpcam.pipeline import run

    def rising_val_loss(self, batch, batch_idx):
        self.log("val/loss", torch.tensor(float(self.current_epoch)), batch_size=len(batch["label"]))

    monkeypatch.setattr(Classifier, "validation_step", rising_val_loss)
    off = ("cache.classifier=false", "cache.features=false")
    first = run(tiny(*off, run="a"))  # its callback builds the prototypes from the best weights
    assert torch_load(tmp_path / "a" / "checkpoints" / "best.ckpt", "c")["epoch"] == 0
    again = run(tiny(*off, f"lpcam.prototypes_path={tmp_path / 'a' / 'prototypes.pt'}", run="b"))  # trains the same
    assert again["timings_s"]["train"] > 0 and again["provenance"]["prototypes"]["source"] == "file"
    for method in first["methods"]:  # the same classifier (epoch 0) evaluated, not the last epoch's
        assert again["methods"][method]["curve"] == first["methods"][method]["curve"]


def test_without_a_validation_split_the_last_epoch_is_kept_cached_and_reused(tiny, tmp_path):
    from lpcam.pipeline import run

    first = run(tiny("dataset.val_split=null", run="a"))
    (entry,) = [p for p in (tmp_path / "cache" / "classifiers").iterdir() if p.is_dir()]
    cached, own = (torch_load(p, "c") for p in (entry / "best.ckpt", tmp_path / "a" / "checkpoints" / "best.ckpt"))
    assert cached["epoch"] == own["epoch"] == 3  # the last of 4 epochs, not lost
    assert all(torch.equal(cached["state_dict"][k], v) for k, v in own["state_dict"].items())
    again = run(tiny("dataset.val_split=null", run="b"))
    assert again["provenance"]["classifier"]["source"] == "cache"
    for method in first["methods"]:
        assert again["methods"][method]["curve"] == first["methods"][method]["curve"]
