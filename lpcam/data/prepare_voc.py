"""PASCAL VOC 2012 with SBD's masks, ready for the paper's recipe: ``lpcam-data voc DIR`` (into
``DIR/VOC2012``), or ``dataset=voc dataset.download=true`` (into ``dataset.root``).

What every WSSS repository asks its users to do by hand, done once and checked:

1. download VOC2012 trainval and SBD from the sources torchvision's ``VOCSegmentation`` and
   ``SBDataset`` use, checked against their MD5 sums (``downloads/`` beside the tree; resumable,
   :mod:`lpcam.downloads`; ``LPCAM_MIRROR`` for a mirror);
2. extract VOC2012, and of SBD only its class masks and split lists;
3. write SBD's class masks (``dataset/cls/<id>.mat``, field ``GTcls.Segmentation``) as
   ``SegmentationClassAug/<id>.png`` (VOC's palette, class ids); an image with a VOC mask keeps
   VOC's, its 255 boundaries included, as the usual ``SegmentationClassAug`` does. The images that
   only SBD annotates get their mask in ``SegmentationClass/`` too, which ``dataset=voc`` reads;
4. write ``ImageSets/Segmentation/train_aug.txt`` as IRN and the official LPCAM code build it: SBD
   train + SBD val + VOC train, minus VOC val (10,582 ids), beside VOC's ``train`` and ``val``;
5. check that every listed id has its image and mask, and only then give the tree its name
   (:mod:`lpcam.data.prepared`).

A killed preparation leaves its staging folder, which the next call removes and redoes (the
downloads are kept and resumed); a complete tree is left alone and said so.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np

from lpcam.data.palette import save_palette_png
from lpcam.data.prepared import MARKER, STAGING, Prepared, check_space, completed, finish, fresh_staging  # noqa: F401
from lpcam.downloads import RemoteFile, fetch
from lpcam.errors import InputError

log = logging.getLogger(__name__)


def _torchvision_sources() -> tuple[RemoteFile, RemoteFile]:
    """VOC2012 trainval and SBD where torchvision's ``VOCSegmentation`` and ``SBDataset`` fetch them,
    with their MD5 sums: read from torchvision, so a moved mirror it follows is followed here too.
    (Its download helper is not used: it writes under the final name and cannot resume.)"""
    from torchvision.datasets import SBDataset
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    voc = DATASET_YEAR_DICT["2012"]
    return (
        RemoteFile(voc["url"], voc["md5"], "VOC2012 trainval", algorithm="md5"),
        RemoteFile(SBDataset.url, SBDataset.md5, "SBD (benchmark.tgz)", algorithm="md5"),
    )


VOC_TAR, SBD_TGZ = _torchvision_sources()
NEEDED_BYTES = 2_000_000_000 + 1_420_000_000 + 2_100_000_000 + 200_000_000  # both archives, VOC extracted, SBD's masks
SBD_MEMBERS = ("benchmark_RELEASE/dataset/cls/", "benchmark_RELEASE/dataset/train.txt", "benchmark_RELEASE/dataset/val.txt")


def read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"{path}: missing from the archive; the download is not VOC/SBD (remove it and run again)")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def train_aug_ids(sbd_train: list[str], sbd_val: list[str], voc_train: list[str], voc_val: list[str]) -> list[str]:
    """IRN's ``train_aug``: SBD train + SBD val + VOC train, without VOC val, each id once."""
    held_out = set(voc_val)
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - held_out)


def sbd_mask(path: Path) -> np.ndarray:
    """The class-id mask of one SBD ``cls/<id>.mat`` (``GTcls.Segmentation``, uint8)."""
    from scipy.io import loadmat

    try:
        gt = loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
        return np.asarray(gt.Segmentation, dtype=np.uint8)
    except Exception as err:  # a broken or foreign .mat: one line naming it
        raise InputError(f"{path}: not an SBD class mask ({type(err).__name__}: {err}); remove the SBD download and run again") from None


def _extract(archive: Path, into: Path, members: tuple[str, ...] | None = None) -> None:
    """Extract ``archive`` (all of it, or the members under the given prefixes), safely."""
    try:
        with tarfile.open(archive) as tar:
            chosen = [m for m in tar.getmembers() if members is None or m.name.startswith(members)]
            tar.extractall(into, members=chosen, filter="data")
    except (tarfile.TarError, EOFError) as err:  # a file put in downloads/ by hand is trusted unchecked
        raise InputError(f"{archive}: not a readable tar archive ({type(err).__name__}); remove it and run again") from None


def prepare_voc(root: str | Path, progress: bool = True) -> Prepared:
    """VOC2012 + SBD as the tree ``root`` (``dataset=voc`` reads ``${data_dir}/VOC2012``), the
    archives in ``downloads/`` beside it; see the module docstring."""
    root = Path(root).expanduser().resolve()
    done = completed(root)
    if done is not None:
        return done
    root.parent.mkdir(parents=True, exist_ok=True)
    downloads = root.parent / "downloads"
    have = {p.name for p in downloads.glob("*")} if downloads.is_dir() else set()
    if {VOC_TAR.filename, SBD_TGZ.filename} - have:
        check_space(root.parent, NEEDED_BYTES, "VOC2012 + SBD")
    voc_tar = fetch(VOC_TAR, downloads / VOC_TAR.filename, progress=progress)
    sbd_tgz = fetch(SBD_TGZ, downloads / SBD_TGZ.filename, progress=progress)

    staging = fresh_staging(root)
    log.info("extracting %s", voc_tar.name)
    _extract(voc_tar, staging)
    voc = staging / "VOCdevkit" / "VOC2012"
    if not (voc / "JPEGImages").is_dir():
        raise InputError(f"{voc_tar}: holds no VOCdevkit/VOC2012/JPEGImages; it is not VOC2012 trainval (remove it and run again)")
    log.info("extracting the class masks of %s", sbd_tgz.name)
    _extract(sbd_tgz, staging / "sbd", SBD_MEMBERS)
    sbd = staging / "sbd" / "benchmark_RELEASE" / "dataset"

    lists = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_ids(lists / "train.txt"), read_ids(lists / "val.txt")
    sbd_train, sbd_val = read_ids(sbd / "train.txt"), read_ids(sbd / "val.txt")
    aug_ids = train_aug_ids(sbd_train, sbd_val, voc_train, voc_val)
    _write_masks(voc, sbd, sorted(set(aug_ids) | set(voc_train) | set(voc_val)), progress)
    (lists / "train_aug.txt").write_text("".join(f"{i}\n" for i in aug_ids))

    counts = {"train_aug": len(aug_ids), "train": len(voc_train), "val": len(voc_val)}
    _verify(voc, {"train_aug": aug_ids, "train": voc_train, "val": voc_val})
    return finish(voc, root, staging, counts, {r.filename: r.url for r in (VOC_TAR, SBD_TGZ)})


def _write_masks(voc: Path, sbd: Path, ids: list[str], progress: bool) -> None:
    """``SegmentationClassAug/<id>.png`` for every id (VOC's mask where VOC has one, else SBD's),
    and SBD's in ``SegmentationClass/`` for the ids VOC does not annotate."""
    from tqdm.auto import tqdm

    aug, own = voc / "SegmentationClassAug", voc / "SegmentationClass"
    aug.mkdir(exist_ok=True)
    for image_id in tqdm(ids, desc="SBD masks to PNG", unit="mask", disable=not progress, leave=False):
        voc_mask = own / f"{image_id}.png"
        if voc_mask.is_file():
            shutil.copyfile(voc_mask, aug / f"{image_id}.png")
            continue
        mat = sbd / "cls" / f"{image_id}.mat"
        if not mat.is_file():
            raise InputError(f"{mat}: listed by SBD or VOC but missing from the archive; remove the SBD download and run again")
        save_palette_png(sbd_mask(mat), aug / f"{image_id}.png")
        os.link(aug / f"{image_id}.png", own / f"{image_id}.png")  # the same folder tree: one file, two names


def _verify(voc: Path, splits: dict[str, list[str]]) -> None:
    """Every listed id has its image and its mask; the first one missing is named."""
    for split, ids in splits.items():
        for image_id in ids:
            for path in (voc / "JPEGImages" / f"{image_id}.jpg", voc / "SegmentationClass" / f"{image_id}.png"):
                if not path.is_file():
                    raise InputError(f"{path}: missing, though {split} lists {image_id}; the archives are incomplete (remove them and run again)")
