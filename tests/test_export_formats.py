"""Per-image export formats: each file read back the way its downstream pipeline reads it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lpcam.data.palette import voc_palette
from lpcam.export import FORMATS, ImageMaps, IrLabelPng, crf_available, make_format, strided_size
from lpcam.metrics.segmentation import seeds_from_cams

H, W = 37, 50  # odd sizes: the stride-4 maps are ceil(H/4) x ceil(W/4) = 10 x 13
KEYS = np.array([3, 7], np.int64)

# one instance of every format, with the options the export stage would pass
ALL_FORMATS = {
    "irn": {},
    "npz": {},
    "png": {"threshold": 0.25},
    "mctformer": {},
    "ir_label": {"crf": False},
}


def _max_normalised(maps: np.ndarray) -> np.ndarray:
    return (maps / maps.max(axis=(1, 2), keepdims=True)).astype(np.float32)


@pytest.fixture
def maps() -> ImageMaps:
    rng = np.random.default_rng(0)
    high_res = rng.random((2, H, W), dtype=np.float32)
    high_res[:, 0, 0] = 0.0  # minimum 0, as for ReLU CAMs
    stride4 = rng.random((2, *strided_size(H, W)), dtype=np.float32)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return ImageMaps("2007_000032", KEYS, _max_normalised(high_res), _max_normalised(stride4), image)


@pytest.fixture
def regions() -> tuple[ImageMaps, np.ndarray]:
    """Maps of known regions and the IR label IRN's rule gives them at 0.30 / 0.05 (no CRF)."""
    cams = np.full((2, H, W), 0.01, np.float32)
    cams[0, :, :] = 0.0
    cams[0, 2:12, 3:20] = 1.0  # class 3: confident foreground
    cams[1, 20:30, 30:45] = 0.8  # class 7: confident foreground ...
    cams[1, 20:30, 30:35] = 0.9  # ... its maximum
    cams[1, 5:10, 15:25] = 0.6  # class 7 overlapping class 3 (1.0 wins on 15:20, 0.6 > 0.3 on 20:25)
    cams[0, 30:35, 0:10] = 0.2  # between the thresholds: unsure
    cams[1, 0:2, 40:50] = 0.05  # exactly at the background threshold: still background (strict >)
    cams[0, 35:37, 40:50] = 0.30  # exactly at the foreground threshold: unsure
    expected = np.zeros((H, W), np.uint8)
    expected[2:12, 3:20] = 4
    expected[5:10, 20:25] = 8
    expected[20:30, 30:45] = 8
    expected[30:35, 0:10] = 255
    expected[35:37, 40:50] = 255
    stride4 = np.zeros((2, *strided_size(H, W)), np.float32)
    return ImageMaps("regions", KEYS, cams, stride4, None), expected


def test_strided_size_is_ceil_of_quarter():
    for h in range(1, 40):
        assert strided_size(h, h + 1) == (math.ceil(h / 4), math.ceil((h + 1) / 4))
    assert strided_size(H, W) == (10, 13)


def test_image_maps_converts_dtypes_and_checks_shapes(maps):
    m = ImageMaps("x", [3, 7], maps.high_res.astype(np.float64), maps.stride4.astype(np.float16))
    assert m.keys.dtype == np.int64 and m.high_res.dtype == np.float32 and m.stride4.dtype == np.float32
    with pytest.raises(ValueError, match="stride4"):
        ImageMaps("x", KEYS, maps.high_res, maps.stride4[:, :9])  # floor, not ceil
    with pytest.raises(ValueError, match="ascending"):
        ImageMaps("x", KEYS[::-1], maps.high_res, maps.stride4)
    with pytest.raises(ValueError, match="high_res"):
        ImageMaps("x", KEYS[:1], maps.high_res, maps.stride4)
    with pytest.raises(ValueError, match="image"):
        ImageMaps("x", KEYS, maps.high_res, maps.stride4, maps.image[:, :, :2])


def test_registry_names_every_format():
    assert set(FORMATS) == set(ALL_FORMATS)
    assert all(make_format(name, **opts).name == name for name, opts in ALL_FORMATS.items())
    with pytest.raises(ValueError, match="unknown export format"):
        make_format("jpeg")


@pytest.mark.parametrize("name", sorted(ALL_FORMATS))
def test_write_writes_at_path(tmp_path, maps, name):
    fmt = make_format(name, **ALL_FORMATS[name])
    expected = fmt.path(tmp_path, maps.image_id)
    assert not expected.exists()
    assert fmt.write(tmp_path, maps) == expected
    assert expected.is_file()
    assert expected.parent == tmp_path / name  # each format in a folder of its own
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [expected.name]  # no temporary left behind


@pytest.mark.parametrize("name", sorted(ALL_FORMATS))
def test_interrupted_write_leaves_no_file_at_path(tmp_path, maps, monkeypatch, name):
    fmt = make_format(name, **ALL_FORMATS[name])
    cls = type(fmt)
    real_save = cls._save

    def save_half_then_fail(self, tmp: Path, m: ImageMaps) -> None:
        real_save(self, tmp, m)
        data = Path(tmp).read_bytes()
        Path(tmp).write_bytes(data[: len(data) // 2])  # killed in the middle of writing
        raise RuntimeError("interrupted")

    monkeypatch.setattr(cls, "_save", save_half_then_fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        fmt.write(tmp_path, maps)
    assert not fmt.path(tmp_path, maps.image_id).exists()
    assert all(".partial-" in p.name for p in tmp_path.rglob("*") if p.is_file())

    monkeypatch.setattr(cls, "_save", real_save)  # the retry of a resumed export
    assert fmt.write(tmp_path, maps).is_file()


def test_irn_npy_is_read_like_irn(tmp_path, maps):
    path = make_format("irn").write(tmp_path, maps)
    assert path == tmp_path / "irn" / "2007_000032.npy"
    cam_dict = np.load(path, allow_pickle=True).item()
    assert set(cam_dict) == {"keys", "cam", "high_res"}

    keys = cam_dict["keys"]
    assert isinstance(keys, np.ndarray) and keys.dtype == np.int64 and keys.tolist() == [3, 7]  # 0-based

    cam = cam_dict["cam"]  # IRN's make_sem_seg_labels calls cam.cuda()
    assert isinstance(cam, torch.Tensor) and cam.dtype == torch.float32 and cam.device.type == "cpu"
    assert tuple(cam.shape) == (2, math.ceil(H / 4), math.ceil(W / 4))
    assert torch.equal(cam, torch.from_numpy(maps.stride4))

    high_res = cam_dict["high_res"]
    assert isinstance(high_res, np.ndarray) and high_res.dtype == np.float32 and high_res.shape == (2, H, W)
    np.testing.assert_array_equal(high_res, maps.high_res)
    assert high_res.min() >= 0 and np.allclose(high_res.max(axis=(1, 2)), 1.0)

    # IRN's eval_cam: a background map at t in front, argmax, keys + 1 padded with 0
    t = 0.15
    padded = np.pad(high_res, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=t)
    labels = np.pad(keys + 1, (1, 0), mode="constant")[np.argmax(padded, axis=0)]
    expected = seeds_from_cams(torch.from_numpy(maps.high_res), torch.from_numpy(KEYS + 1), t).numpy()
    np.testing.assert_array_equal(labels, expected)


def test_npz_loads_without_pickle(tmp_path, maps):
    path = make_format("npz").write(tmp_path, maps)
    assert path == tmp_path / "npz" / "2007_000032.npz"
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"keys", "cam", "high_res"}
        assert data["keys"].dtype == np.int64 and data["keys"].tolist() == [3, 7]
        assert data["cam"].dtype == np.float32 and data["cam"].shape == (2, 10, 13)
        assert data["high_res"].dtype == np.float32 and data["high_res"].shape == (2, H, W)
        np.testing.assert_array_equal(data["cam"], maps.stride4)
        np.testing.assert_array_equal(data["high_res"], maps.high_res)


@pytest.mark.parametrize("threshold", [0.05, 0.25, 0.6])
def test_png_equals_evaluated_seeds(tmp_path, maps, threshold):
    path = make_format("png", threshold=threshold).write(tmp_path, maps)
    assert path == tmp_path / "png" / "2007_000032.png"
    with Image.open(path) as img:
        assert img.mode == "P"
        palette = np.array(img.getpalette(), np.uint8).reshape(-1, 3)
        mask = np.array(img)
    np.testing.assert_array_equal(palette[:21], voc_palette()[:21])
    expected = seeds_from_cams(torch.from_numpy(maps.high_res), torch.from_numpy(maps.keys + 1), threshold)
    np.testing.assert_array_equal(mask, expected.numpy())
    assert set(np.unique(mask)) <= {0, 4, 8}


def test_png_without_palette_is_grey(tmp_path, maps):
    path = make_format("png", threshold=0.25, palette=False).write(tmp_path, maps)
    with Image.open(path) as img:
        assert img.mode == "L"
        mask = np.array(img)
    expected = seeds_from_cams(torch.from_numpy(maps.high_res), torch.from_numpy(maps.keys + 1), 0.25)
    np.testing.assert_array_equal(mask, expected.numpy())


def test_png_refuses_class_ids_that_collide_with_ignore(tmp_path):
    maps = ImageMaps("x", [254], np.ones((1, 4, 4), np.float32), np.ones((1, 1, 1), np.float32))
    with pytest.raises(ValueError, match="ignore"):
        make_format("png", threshold=0.5).write(tmp_path, maps)
    assert not (tmp_path / "png" / "x.png").exists()


@pytest.mark.parametrize("minmax", [True, False])
def test_mctformer_npy_is_read_like_mctformer(tmp_path, maps, minmax):
    path = make_format("mctformer", minmax=minmax).write(tmp_path, maps)
    assert path == tmp_path / "mctformer" / "2007_000032.npy"
    cam_dict = np.load(path, allow_pickle=True).item()
    assert list(cam_dict) == [3, 7] and all(type(k) is int for k in cam_dict)  # 0-based class indices
    for i, key in enumerate(KEYS):
        value = cam_dict[int(key)]
        assert value.dtype == np.float32 and value.shape == (H, W)
        assert value.min() == 0.0 and np.isclose(value.max(), 1.0)
        source = maps.high_res[i]
        expected = (source - source.min()) / (source.max() - source.min() + 1e-8) if minmax else source
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)

    # MCTformer's evaluation: map k in channel k + 1, channel 0 = the background score t, argmax
    t = 0.3
    tensor = np.zeros((21, H, W), np.float32)
    for key, value in cam_dict.items():
        tensor[key + 1] = value
    tensor[0] = t
    predict = np.argmax(tensor, axis=0)
    expected = seeds_from_cams(torch.from_numpy(maps.high_res), torch.from_numpy(KEYS + 1), t).numpy()
    np.testing.assert_array_equal(predict, expected)


def test_mctformer_minmax_stretches_maps_with_an_offset(tmp_path):
    cams = np.linspace(0.5, 1.0, 4 * 6, dtype=np.float32).reshape(1, 4, 6)
    maps = ImageMaps("x", [0], cams, np.zeros((1, 1, 2), np.float32))
    value = np.load(make_format("mctformer").write(tmp_path, maps), allow_pickle=True).item()[0]
    assert value.min() == 0.0 and np.isclose(value.max(), 1.0)


def test_ir_label_of_known_regions(tmp_path, regions):
    maps, expected = regions
    fmt = make_format("ir_label", crf=False)
    assert (fmt.fg_threshold, fmt.bg_threshold) == (0.30, 0.05)  # IRN's defaults
    assert not fmt.needs_image and not fmt.crf
    path = fmt.write(tmp_path, maps)
    assert path == tmp_path / "ir_label" / "regions.png"
    with Image.open(path) as img:
        assert img.mode == "L"  # IRN reads it with imageio.imread, which expands palettes to RGB
        label = np.array(img)
    np.testing.assert_array_equal(label, expected)


def test_ir_label_rule_on_random_maps(maps):
    fmt = IrLabelPng(fg_threshold=0.45, bg_threshold=0.25, crf=False)  # official LPCAM's thresholds
    label = fmt.labels(maps)
    assert label.dtype == np.uint8 and label.shape == (H, W)
    assert set(np.unique(label)) <= {0, 4, 8, 255}
    top = maps.high_res.max(axis=0)
    winner = np.array([4, 8])[maps.high_res.argmax(axis=0)]
    np.testing.assert_array_equal(label[top > 0.45], winner[top > 0.45])
    assert np.all(label[top <= 0.25] == 0)
    assert np.all(label[(top > 0.25) & (top <= 0.45)] == 255)


def test_ir_label_options_are_checked():
    with pytest.raises(ValueError, match="bg_threshold"):
        IrLabelPng(fg_threshold=0.1, bg_threshold=0.2, crf=False)
    assert IrLabelPng().crf is False  # the default never depends on whether pydensecrf imports


def test_image_without_labels(tmp_path):
    maps = ImageMaps("empty", np.zeros(0, np.int64), np.zeros((0, H, W)), np.zeros((0, 10, 13)))
    for name, opts in ALL_FORMATS.items():
        make_format(name, **opts).write(tmp_path, maps)  # one export folder: a subfolder per format
    irn = np.load(tmp_path / "irn" / "empty.npy", allow_pickle=True).item()
    assert irn["keys"].shape == (0,) and tuple(irn["cam"].shape) == (0, 10, 13)
    assert np.array(Image.open(tmp_path / "png" / "empty.png")).max() == 0
    assert np.array(Image.open(tmp_path / "ir_label" / "empty.png")).max() == 0
    assert np.load(tmp_path / "mctformer" / "empty.npy", allow_pickle=True).item() == {}


@pytest.mark.skipif(crf_available(), reason="pydensecrf is importable here")
def test_ir_label_crf_true_needs_pydensecrf():
    with pytest.raises(ImportError, match="pydensecrf"):
        IrLabelPng(crf=True)


@pytest.mark.skipif(
    not crf_available(),
    reason="pydensecrf is not installed (PyPI: pydensecrf2, built from source)",
)
def test_ir_label_with_crf(tmp_path, regions):
    maps, expected = regions
    # an image whose colours follow the regions, so the CRF has edges to keep
    image = np.full((H, W, 3), 40, np.uint8)
    image[expected == 4] = (200, 30, 30)
    image[expected == 8] = (30, 200, 30)
    maps = ImageMaps(maps.image_id, maps.keys, maps.high_res, maps.stride4, image)
    fmt = make_format("ir_label", crf=True)
    assert fmt.needs_image
    with pytest.raises(ValueError, match="needs the image"):
        fmt.write(tmp_path, ImageMaps("x", maps.keys, maps.high_res, maps.stride4))
    with Image.open(fmt.write(tmp_path, maps)) as img:
        label = np.array(img)
    assert label.shape == (H, W) and set(np.unique(label)) <= {0, 4, 8, 255}
    # the CRF only smooths: the centres of the regions keep their labels
    assert label[6, 10] == 4 and label[25, 40] == 8 and label[20, 5] == 0
    assert (label == expected).mean() > 0.9
