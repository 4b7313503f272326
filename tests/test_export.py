"""The export stage end to end: files per image read back as the pipelines read them, resume after
an interruption, refusal to mix settings, and the round trip to the in-memory evaluation."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from lpcam.errors import InputError
from lpcam.metrics.segmentation import seeds_from_cams
from lpcam.pipeline import run


@pytest.fixture
def trained(tiny):
    """A tiny classifier and its prototypes, in the cache (stage=train), and a config maker."""
    assert run(tiny("stage=train", run="train")) is None
    return tiny


def test_export_writes_every_format_per_image_and_matches_the_in_memory_maps(trained, tmp_path):
    out = tmp_path / "cams"
    cfg = trained("stage=export", f"export.dir={out}", "export.formats=[irn,npz,png]", run="export")
    assert run(cfg) is None
    dm = instantiate(cfg.dataset)
    ids = dm.dataset(dm.train_split).ids
    for fmt, ext in (("irn", "npy"), ("npz", "npz"), ("png", "png")):
        assert sorted(p.stem for p in (out / fmt).glob(f"*.{ext}")) == sorted(ids)  # one file per image, each format
    assert not list(out.rglob("*.partial-*"))

    # read back as IRN reads it, and compare with the method's maps in memory
    from lpcam.cams.base import Batch
    from lpcam.cams.prototype_maps import Lpcam
    from lpcam.prototypes.store import Prototypes
    from lpcam.stages.classifier import obtain

    data = dm.dataset(dm.train_split)
    item = data[0]
    record = np.load(out / "irn" / f"{ids[0]}.npy", allow_pickle=True).item()
    keys = torch.nonzero(item["label"]).flatten().numpy()
    np.testing.assert_array_equal(np.asarray(record["keys"]), keys)
    h, w = item["mask"].shape
    high_res, cam = np.asarray(record["high_res"]), np.asarray(record["cam"])
    assert high_res.shape == (len(keys), h, w) and cam.shape == (len(keys), -(-h // 4), -(-w // 4))
    assert high_res.dtype == np.float32 and 0 <= high_res.min() and high_res.max() <= 1

    backbone = instantiate(cfg.backbone)
    classifier = obtain(cfg, dm, backbone, tmp_path / "export", None).classifier.eval()
    protos = Prototypes.load(tmp_path / "train" / "prototypes.pt")
    views = cfg.evaluation
    batch = Batch(item["image"][None], item["label"][None], classifier.features, tuple(views.scales), views.flip, views.rescale, views.upsample)
    with torch.no_grad():
        expected = Lpcam(protos).maps(batch)[0, torch.as_tensor(keys)]
    # the export ran this image in a batch, this recomputes it alone: oneDNN's float32 kernels
    # depend on the batch size (on an AVX2 CPU the two differ by up to 1.3e-6 on maps in [0, 1])
    np.testing.assert_allclose(high_res, expected.numpy(), rtol=0, atol=1e-5)
    npz = np.load(out / "npz" / f"{ids[0]}.npz", allow_pickle=False)
    np.testing.assert_array_equal(npz["high_res"], high_res)
    png = Image.open(out / "png" / f"{ids[0]}.png")
    assert png.mode == "P"
    seeds = seeds_from_cams(torch.from_numpy(high_res), torch.from_numpy(keys) + 1, cfg.evaluation.default_threshold)
    np.testing.assert_array_equal(np.asarray(png), seeds.numpy())


def test_an_interrupted_export_resumes_with_one_complete_file_per_image(trained, tmp_path, monkeypatch):
    from lpcam.export import formats

    out = tmp_path / "cams"
    cfg = trained("stage=export", f"export.dir={out}", "export.formats=[irn]", run="export")
    writes = {"n": 0}
    original = np.save

    def failing_save(*args, **kwargs):
        writes["n"] += 1
        if writes["n"] > 20:
            raise RuntimeError("interrupted mid-export")
        return original(*args, **kwargs)

    monkeypatch.setattr(formats.np, "save", failing_save)
    with pytest.raises(RuntimeError, match="interrupted mid-export"):
        run(cfg)
    monkeypatch.setattr(formats.np, "save", original)
    assert len(list((out / "irn").glob("*.npy"))) == 20 and not list(out.rglob("*.partial-*"))
    run(trained("stage=export", f"export.dir={out}", "export.formats=[irn]", run="again"))
    ids = instantiate(cfg.dataset).dataset("train_aug").ids
    assert sorted(p.stem for p in (out / "irn").glob("*.npy")) == sorted(ids)
    for p in (out / "irn").glob("*.npy"):
        assert np.load(p, allow_pickle=True).item()["high_res"].ndim == 3  # every file complete


def test_other_settings_into_the_same_folder_are_refused(trained, tmp_path):
    out = tmp_path / "cams"
    run(trained("stage=export", f"export.dir={out}", "export.split=train", run="a"))
    with pytest.raises(InputError, match="export.dir=.*method='lpcam_max'"):
        run(trained("stage=export", f"export.dir={out}", "export.split=train", "export.method=lpcam_max", run="b"))
    with pytest.raises(InputError, match="stage=export: give export.dir"):
        run(trained("stage=export", run="c"))


def test_exported_irn_files_score_exactly_the_in_memory_miou(trained, tmp_path):
    out = tmp_path / "cams"
    results = run(trained(f"export.dir={out}", "export.split=train", run="all"))  # evaluate, then export
    scored = run(trained("stage=score", f"export.dir={out}", run="score"))  # the round trip, from the files
    exported = scored["methods"]["lpcam_official"]
    assert scored["split"] == "train" and scored["primary_method"] == "lpcam_official"
    assert exported["best"] == results["methods"]["lpcam_official"]["best"]
    assert exported["curve"] == results["methods"]["lpcam_official"]["curve"]
    assert exported["per_class_iou"] == results["methods"]["lpcam_official"]["per_class_iou"]
    # a split that was not exported is named, not a traceback
    with pytest.raises(InputError, match="no exported maps for image .* of split val"):
        run(trained("stage=score", f"export.dir={out}", "export.split=val", run="score_val"))
    with pytest.raises(InputError, match="not a folder lpcam exported into"):
        run(trained("stage=score", f"export.dir={tmp_path}", run="score_none"))


def test_sigterm_stops_an_export_which_the_same_command_then_completes(trained, tmp_path):
    """SIGTERM before the 4th image (``tests/faults.py``: the signal lands at a known batch, not
    when a polling loop happens to see files) stops the export at once: exactly the 3 images
    before it have their files, each complete, none half-written. The same command, rerun, writes
    the rest: one file per image of the split."""
    import signal

    from tests.conftest import TINY
    from tests.faults import finish, start

    out = tmp_path / "cams"
    overrides = [*TINY, f"data_dir={tmp_path / 'data'}", f"cache.dir={tmp_path / 'cache'}", "stage=export",
                 f"export.dir={out}", "dataset.eval_batch_size=1", f"hydra.run.dir={tmp_path / 'sub'}", "logger=none"]  # fmt: skip
    after = tmp_path / "after"
    proc = start(overrides, tmp_path / "stopped.log", "export:4:SIGTERM", LOG=after)
    code, log = finish(proc, tmp_path / "stopped.log")
    assert code == 128 + signal.SIGTERM and "stopped by SIGTERM" in log, log[-3000:]
    assert after.read_text() == "0"  # no batch was started after the signal
    done = sorted((out / "irn").glob("*.npy"))
    assert len(done) == 3 and not list(out.rglob("*.partial-*"))
    for p in done:  # every file there is complete
        assert np.load(p, allow_pickle=True).item()["high_res"].ndim == 3
    # the same command resumes and finishes: one file per image, the first three left as they were
    stamps = {p.name: p.stat().st_mtime_ns for p in done}
    code, log = finish(start(overrides, tmp_path / "rerun.log"), tmp_path / "rerun.log")
    assert code == 0, log[-3000:]
    dm = instantiate(trained().dataset)
    assert sorted(p.stem for p in (out / "irn").glob("*.npy")) == sorted(dm.dataset(dm.train_split).ids)
    assert {n: (out / "irn" / n).stat().st_mtime_ns for n in stamps} == stamps


def test_two_ddp_processes_export_each_image_once_and_the_same_maps(tiny, tmp_path):
    import re
    import subprocess
    import sys

    from tests.conftest import TINY

    odd = "dataset.generator.num_val=15"  # an odd split: a padding sampler would repeat one image
    assert run(tiny("stage=train", odd, run="train")) is None
    ckpt = tmp_path / "train" / "checkpoints" / "best.ckpt"
    run(tiny(odd, "stage=export", f"ckpt_path={ckpt}", f"export.dir={tmp_path / 'one'}", "export.split=val", run="one"))
    cmd = [
        sys.executable, "-m", "lpcam.run", *TINY, odd, f"data_dir={tmp_path / 'data'}", f"cache.dir={tmp_path / 'cache'}",
        f"ckpt_path={ckpt}", "stage=export", f"export.dir={tmp_path / 'two'}", "export.split=val",
        "trainer.devices=2", "trainer.strategy=ddp", f"hydra.run.dir={tmp_path / 'ddp'}", "logger=none",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [int(n) for n in re.findall(r"export: (\d+) images written", proc.stdout + proc.stderr)]
    assert len(written) == 2 and sum(written) == 15 and min(written) >= 7  # each rank its shard, none twice
    one, two = sorted((tmp_path / "one" / "irn").glob("*.npy")), sorted((tmp_path / "two" / "irn").glob("*.npy"))
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 15
    for a, b in zip(one, two):
        ra, rb = (np.load(p, allow_pickle=True).item() for p in (a, b))
        np.testing.assert_array_equal(ra["keys"], rb["keys"])
        np.testing.assert_array_equal(ra["high_res"], rb["high_res"])
        np.testing.assert_array_equal(ra["cam"].numpy(), rb["cam"].numpy())


def test_every_format_exported_into_one_folder_stays_readable_and_scores(trained, tmp_path):
    """irn and mctformer both write <id>.npy, png and ir_label both <id>.png: each format has its own
    subfolder, so exported together none replaces another, and stage=score reads the irn files."""
    import json
    import shutil

    from lpcam.export.formats import ImageMaps, IrLabelPng

    out = tmp_path / "cams"
    everything = "export.formats=[irn,npz,png,mctformer,ir_label]"
    cfg = trained("stage=export", f"export.dir={out}", "export.split=train", everything, run="export")
    assert run(cfg) is None
    ids = sorted(instantiate(cfg.dataset).dataset("train").ids)
    for fmt, ext in (("irn", "npy"), ("npz", "npz"), ("png", "png"), ("mctformer", "npy"), ("ir_label", "png")):
        assert sorted(p.stem for p in (out / fmt).glob(f"*.{ext}")) == ids, fmt
    assert json.loads((out / "export.json").read_text())["formats"] == ["irn", "npz", "png", "mctformer", "ir_label"]
    for image_id in ids[:5]:
        irn = np.load(out / "irn" / f"{image_id}.npy", allow_pickle=True).item()  # as IRN's eval_cam reads it
        keys, high_res = np.asarray(irn["keys"]), np.asarray(irn["high_res"])
        mct = np.load(out / "mctformer" / f"{image_id}.npy", allow_pickle=True).item()  # MCTformer's dict
        assert sorted(mct) == keys.tolist()
        for i, k in enumerate(keys):
            m = high_res[i]
            np.testing.assert_allclose(mct[int(k)], (m - m.min()) / (m.max() - m.min() + 1e-8), rtol=1e-6, atol=1e-7)
        with np.load(out / "npz" / f"{image_id}.npz", allow_pickle=False) as npz:
            np.testing.assert_array_equal(npz["high_res"], high_res)
        seeds = seeds_from_cams(torch.from_numpy(high_res), torch.from_numpy(keys) + 1, cfg.evaluation.default_threshold)
        with Image.open(out / "png" / f"{image_id}.png") as png:
            assert png.mode == "P"
            np.testing.assert_array_equal(np.asarray(png), seeds.numpy())
        label = IrLabelPng().labels(ImageMaps(image_id, keys, high_res, np.asarray(irn["cam"])))
        with Image.open(out / "ir_label" / f"{image_id}.png") as ir:
            assert ir.mode == "L"  # IRN reads it with imageio.imread
            np.testing.assert_array_equal(np.asarray(ir), label)
    evaluated = run(trained(run="evaluate"))["methods"]["lpcam_official"]
    scored = run(trained("stage=score", f"export.dir={out}", run="score"))["methods"]["lpcam_official"]
    assert scored["best"] == evaluated["best"] and scored["curve"] == evaluated["curve"]
    # an export of an earlier lpcam kept every file in the folder itself: stage=score still reads it
    old = tmp_path / "old"
    shutil.copytree(out / "irn", old)
    manifest = json.loads((out / "export.json").read_text())
    (old / "export.json").write_text(json.dumps({**manifest, "schema": 1, "formats": ["irn"]}))
    assert run(trained("stage=score", f"export.dir={old}", run="score_old"))["methods"]["lpcam_official"]["best"] == evaluated["best"]
