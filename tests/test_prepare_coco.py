"""``lpcam-data coco DIR --yes`` against tiny zips with COCO 2014's layout on a loopback server."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from lpcam.cli.data import main as lpcam_data
from lpcam.data import prepare_coco as prep
from lpcam.data.prepared import MARKER
from lpcam.downloads import RemoteFile
from tests.test_downloads import server  # noqa: F401  (the loopback server fixture)


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def annotations(split: str, n: int) -> bytes:
    images = [{"id": i, "file_name": f"COCO_{split}_{i:012d}.jpg", "width": 40, "height": 32} for i in range(1, n + 1)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 10, 10], "area": 100, "iscrowd": 0,
             "segmentation": [[4, 4, 14, 4, 14, 14, 4, 14]]} for i in range(1, n + 1)]  # fmt: skip
    return json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}).encode()


@pytest.fixture
def archives(server, monkeypatch):  # noqa: F811
    files = {
        "train2014.zip": zipped({f"train2014/COCO_train2014_{i:012d}.jpg": jpeg() for i in range(1, 4)}),
        "val2014.zip": zipped({f"val2014/COCO_val2014_{i:012d}.jpg": jpeg() for i in range(1, 3)}),
        "annotations_trainval2014.zip": zipped({"annotations/instances_train2014.json": annotations("train2014", 3),
                                                "annotations/instances_val2014.json": annotations("val2014", 2)}),
    }  # fmt: skip
    server.files.update(files)
    monkeypatch.setattr(prep, "ARCHIVES", tuple(
        (RemoteFile(r.url, hashlib.md5(files[r.filename]).hexdigest(), r.what, algorithm="md5"), len(files[r.filename]))
        for r, _ in prep.ARCHIVES
    ))  # fmt: skip
    return server


def test_coco_says_its_size_and_waits_for_yes_then_prepares_the_layout_dataset_coco_reads(archives, tmp_path, capsys):
    assert lpcam_data(["coco", str(tmp_path / "data"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "COCO 2014 is 0.0 GB to download (train2014.zip" in err and "run again" not in err and "--yes" in err
    assert archives.requests == []  # nothing was fetched before the yes

    assert lpcam_data(["coco", str(tmp_path / "data"), "--yes", "--no-progress"]) == 0
    assert "COCO2014: ready (3 train2014, 2 val2014)" in capsys.readouterr().out
    root = tmp_path / "data" / "COCO2014"
    assert (root / MARKER).is_file() and (root / "train2014" / "COCO_train2014_000000000001.jpg").is_file()

    from lpcam.data.coco import CocoSegmentation

    item = CocoSegmentation(root, "train2014")[0]
    assert item["mask"].shape == (32, 40) and set(np.unique(item["mask"].numpy())) == {0, 1}
    assert lpcam_data(["coco", str(tmp_path / "data"), "--no-progress"]) == 0  # complete: no yes needed
    assert "already complete (3 train2014, 2 val2014); nothing to do" in capsys.readouterr().out


def test_an_archive_without_cocos_layout_is_refused_in_one_line(archives, tmp_path, capsys, monkeypatch):
    bad = zipped({"something/else.txt": b"x"})
    archives.files["annotations_trainval2014.zip"] = bad
    monkeypatch.setattr(prep, "ARCHIVES", tuple(
        (RemoteFile(r.url, hashlib.md5(bad).hexdigest(), r.what, "md5") if r.filename.startswith("annotations") else r, s)
        for r, s in prep.ARCHIVES
    ))  # fmt: skip
    assert lpcam_data(["coco", str(tmp_path / "data"), "--yes", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "instances_train2014.json: missing from the archives; they are not COCO 2014" in err and "\n" not in err
    assert not (tmp_path / "data" / "COCO2014").exists()


def test_dataset_download_on_coco_asks_for_the_explicit_yes_first(archives, tmp_path):
    from lpcam.data.coco import CocoDataModule
    from lpcam.errors import InputError

    dm = CocoDataModule(str(tmp_path / "data" / "COCO2014"), download=True, num_workers=0)
    with pytest.raises(InputError, match=r"COCO 2014 is .* GB to download .*lpcam-data coco .*data --yes"):
        dm.prepare_data()
    assert archives.requests == []
