"""MS COCO 2014 for ``dataset=coco``: ``lpcam-data coco DIR --yes`` (into ``DIR/COCO2014``).

The images (``train2014.zip``, ``val2014.zip``) and the instance annotations
(``annotations_trainval2014.zip``) from cocodataset.org, checked against their published MD5 sums,
resumable (:mod:`lpcam.downloads`; ``LPCAM_MIRROR`` for a mirror), about 20 GB to download and as
much extracted: so the size is said first and nothing starts without an explicit yes. The zips are
extracted into a staging folder; the tree gets its name once every folder and annotation file is
there (:mod:`lpcam.data.prepared`). The masks are drawn from the annotations when the data is read,
as ``dataset=coco`` does.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

from lpcam.data.prepared import Prepared, check_space, completed, finish, fresh_staging
from lpcam.downloads import RemoteFile, fetch
from lpcam.errors import InputError

log = logging.getLogger(__name__)

ARCHIVES = (  # file, size in bytes (what cocodataset.org serves), the MD5 its users publish
    (RemoteFile("http://images.cocodataset.org/zips/train2014.zip", "0da8c0bd3d6becc4dcb32757491aca88",
                "COCO train2014 images", algorithm="md5"), 13_510_573_713),
    (RemoteFile("http://images.cocodataset.org/zips/val2014.zip", "a3d79f5ed8d289b7a7554ce06a5782b3",
                "COCO val2014 images", algorithm="md5"), 6_645_013_297),
    (RemoteFile("http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
                "0a379cfc70b0e71301e0f377548639bd", "COCO 2014 annotations", algorithm="md5"), 252_872_794),
)  # fmt: skip
SPLITS = ("train2014", "val2014")


def download_size() -> str:
    parts = ", ".join(f"{r.filename} {size / 1e9:.1f} GB" for r, size in ARCHIVES)
    return f"{sum(size for _, size in ARCHIVES) / 1e9:.1f} GB to download ({parts}), about as much again extracted"


def prepare_coco(root: str | Path, yes: bool = False, progress: bool = True) -> Prepared:
    """COCO 2014 as the tree ``root``, the archives in ``downloads/`` beside it."""
    root = Path(root).expanduser().resolve()
    done = completed(root)
    if done is not None:
        return done
    if not yes:
        raise InputError(f"COCO 2014 is {download_size()}; say yes to start it: lpcam-data coco {root.parent} --yes")
    downloads = root.parent / "downloads"
    root.parent.mkdir(parents=True, exist_ok=True)
    have = {p.name for p in downloads.glob("*")} if downloads.is_dir() else set()
    missing = sum(size for r, size in ARCHIVES if r.filename not in have)
    check_space(root.parent, missing + sum(size for _, size in ARCHIVES), "COCO 2014's archives and images")
    archives = [fetch(r, downloads / r.filename, progress=progress) for r, _ in ARCHIVES]

    staging = fresh_staging(root)
    tree = staging / root.name
    tree.mkdir()
    for archive in archives:
        log.info("extracting %s", archive.name)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tree)
        except zipfile.BadZipFile:
            raise InputError(f"{archive}: not a zip archive; remove it and run again") from None
    counts = {}
    for split in SPLITS:
        annotations = tree / "annotations" / f"instances_{split}.json"
        images = tree / split
        if not annotations.is_file() or not images.is_dir():
            raise InputError(f"{annotations if not annotations.is_file() else images}: missing from the archives; "
                             f"they are not COCO 2014 (remove them and run again)")  # fmt: skip
        listed = json.loads(annotations.read_text())["images"]
        absent = next((i["file_name"] for i in listed if not (images / i["file_name"]).is_file()), None)
        if absent:
            raise InputError(f"{images / absent}: listed in {annotations.name} but missing; the archives are incomplete (remove them and run again)")
        counts[split] = len(listed)
    return finish(tree, root, staging, counts, {r.filename: r.url for r, _ in ARCHIVES})
