"""The export stage end to end: files per image read back as the pipelines read them, resume after
an interruption, refusal to mix settings, and the round trip to the in-memory evaluation."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from lpcam.errors import InputError
from lpcam.metrics.segmentation import DEFAULT_THRESHOLDS, seeds_from_cams
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
    for ext in ("npy", "npz", "png"):
        assert sorted(p.stem for p in out.glob(f"*.{ext}")) == sorted(ids)  # one file per image, each format
    assert not list(out.glob("*.partial-*"))

    # read back as IRN reads it, and compare with the method's maps in memory
    from lpcam.cams.base import Batch
    from lpcam.cams.prototype_maps import Lpcam
    from lpcam.prototypes.store import Prototypes
    from lpcam.stages.classifier import obtain

    data = dm.dataset(dm.train_split)
    item = data[0]
    record = np.load(out / f"{ids[0]}.npy", allow_pickle=True).item()
    keys = torch.nonzero(item["label"]).flatten().numpy()
    np.testing.assert_array_equal(np.asarray(record["keys"]), keys)
    h, w = item["mask"].shape
    high_res, cam = np.asarray(record["high_res"]), np.asarray(record["cam"])
    assert high_res.shape == (len(keys), h, w) and cam.shape == (len(keys), -(-h // 4), -(-w // 4))
    assert high_res.dtype == np.float32 and 0 <= high_res.min() and high_res.max() <= 1

    backbone = instantiate(cfg.backbone)
    classifier = obtain(cfg, dm, backbone, tmp_path / "export", None).classifier.eval()
    protos = Prototypes.load(tmp_path / "train" / "prototypes.pt")
    batch = Batch(item["image"][None], item["label"][None], classifier.features, tuple(cfg.evaluation.scales), cfg.evaluation.flip)
    with torch.no_grad():
        expected = Lpcam(protos).maps(batch)[0, torch.as_tensor(keys)]
    np.testing.assert_allclose(high_res, expected.numpy(), atol=1e-6)
    npz = np.load(out / f"{ids[0]}.npz", allow_pickle=False)
    np.testing.assert_array_equal(npz["high_res"], high_res)
    png = Image.open(out / f"{ids[0]}.png")
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
    assert len(list(out.glob("*.npy"))) == 20 and not list(out.glob("*.partial-*"))
    run(trained("stage=export", f"export.dir={out}", "export.formats=[irn]", run="again"))
    ids = instantiate(cfg.dataset).dataset("train_aug").ids
    assert sorted(p.stem for p in out.glob("*.npy")) == sorted(ids)
    for p in out.glob("*.npy"):
        assert np.load(p, allow_pickle=True).item()["high_res"].ndim == 3  # every file complete


def test_other_settings_into_the_same_folder_are_refused(trained, tmp_path):
    out = tmp_path / "cams"
    run(trained("stage=export", f"export.dir={out}", "export.split=train", run="a"))
    with pytest.raises(InputError, match="export.dir=.*method='lpcam_max'"):
        run(trained("stage=export", f"export.dir={out}", "export.split=train", "export.method=lpcam_max", run="b"))
    with pytest.raises(InputError, match="stage=export: give export.dir"):
        run(trained("stage=export", run="c"))


def test_exported_irn_files_score_exactly_the_in_memory_miou(trained, tmp_path):
    from lpcam.stages.export import score_export

    out = tmp_path / "cams"
    results = run(trained(f"export.dir={out}", "export.split=train", run="all"))  # evaluate, then export
    cfg = trained(run="x")
    dm = instantiate(cfg.dataset)
    exported = score_export(out, dm.dataset("train"), dm.class_names, DEFAULT_THRESHOLDS, 0.15)
    assert exported["best"] == results["methods"]["lpcam_official"]["best"]
    assert exported["curve"] == results["methods"]["lpcam_official"]["curve"]
