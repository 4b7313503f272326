"""Per-image export formats: the files other WSSS pipelines read, written from one image's maps.

Each format turns one ``ImageMaps`` into one file at ``path(dir, image_id)``, so that an export
can skip the images whose files already exist. Each format has a folder of its own,
``<dir>/<format name>/<image id><suffix>``: ``irn`` and ``mctformer`` both write ``.npy`` files and
``png`` and ``ir_label`` both ``.png`` files, so in one folder one would replace the other. The
folder is what a pipeline is pointed at (IRN's ``--cam_out_dir DIR/irn``, ``--ir_label_out_dir
DIR/ir_label``). Every write goes through ``atomic_write`` (a
temporary sibling, then a rename): an interrupted write never leaves a file at ``path()``, only
possibly a ``<name>.partial-<pid>`` next to it. The conventions each format follows, and the
public code they were read from, are in ``docs/export.md`` ("What the pipelines write and read").

Formats: ``irn`` (IRN / official LPCAM ``.npy`` dict), ``npz`` (the same arrays without pickle),
``png`` (seed pseudo-mask, VOC palette), ``mctformer`` (MCTformer's ``.npy`` dict),
``ir_label`` (IRN's ``cam_to_ir_label`` PNG, optionally with a dense CRF).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from PIL import Image

from lpcam.atomic import atomic_write
from lpcam.data.palette import save_palette_png
from lpcam.metrics.segmentation import seeds_from_cams
from lpcam.safe_load import load_npy

__all__ = [
    "ImageMaps",
    "ExportFormat",
    "IrnNpy",
    "Npz",
    "SeedPng",
    "MctformerNpy",
    "IrLabelPng",
    "FORMATS",
    "make_format",
    "strided_size",
    "crf_available",
]

IGNORE = 255  # label value of "unsure" pixels in pseudo-masks and IR labels


def strided_size(height: int, width: int, stride: int = 4) -> tuple[int, int]:
    """IRN's ``get_strided_size``: ceil(H / stride), ceil(W / stride)."""
    return (height - 1) // stride + 1, (width - 1) // stride + 1


@dataclass(frozen=True, eq=False)
class ImageMaps:
    """The maps of one image, as every format needs them.

    ``keys`` are the 0-based foreground class ids labelled in the image, strictly ascending
    (ties between maps go to the lower class in every format only if they are sorted);
    ``high_res`` (n, H, W) and ``stride4`` (n, ceil(H/4), ceil(W/4)) hold one max-normalised
    map per key, no background channel; ``image`` (H, W, 3) uint8 RGB is only read by formats
    with ``needs_image``. Arrays are converted to int64 / float32 on construction, so a
    format's output dtypes never depend on what the caller happened to hold.
    """

    image_id: str
    keys: np.ndarray
    high_res: np.ndarray
    stride4: np.ndarray
    image: np.ndarray | None = None

    def __post_init__(self) -> None:
        keys = np.asarray(self.keys).astype(np.int64, copy=False).reshape(-1)
        high_res = np.asarray(self.high_res, dtype=np.float32)
        stride4 = np.asarray(self.stride4, dtype=np.float32)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "high_res", high_res)
        object.__setattr__(self, "stride4", stride4)

        if not self.image_id:
            raise ValueError("image_id must not be empty")
        if high_res.ndim != 3 or high_res.shape[0] != len(keys):
            raise ValueError(f"high_res must be (n={len(keys)}, H, W), got {high_res.shape}")
        if len(keys) and (keys.min() < 0 or np.any(np.diff(keys) <= 0)):
            raise ValueError(f"keys must be distinct 0-based class ids, ascending; got {keys.tolist()}")
        expected = (len(keys), *strided_size(*high_res.shape[1:]))
        if stride4.shape != expected:
            raise ValueError(f"stride4 must be {expected} (ceil of H/4, W/4), got {stride4.shape}")
        if self.image is not None:
            image = np.asarray(self.image)
            if image.dtype != np.uint8 or image.shape != (*high_res.shape[1:], 3):
                raise ValueError(
                    f"image must be uint8 (H, W, 3) = {(*high_res.shape[1:], 3)}, got {image.dtype} {image.shape}"
                )
            object.__setattr__(self, "image", image)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return self.high_res.shape[1], self.high_res.shape[2]


class ExportFormat(Protocol):
    """What the export stage needs of a format."""

    name: str
    needs_image: bool

    def path(self, dir: Path, image_id: str) -> Path: ...

    def write(self, dir: Path, maps: ImageMaps) -> Path: ...


class _FileFormat:
    """One file per image, ``<dir>/<name>/<image_id><suffix>``, written atomically by ``_save``."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    needs_image: bool = False

    def folder(self, dir: Path) -> Path:
        """Where this format's files go: a subfolder of the export named after the format."""
        return Path(dir) / self.name

    def path(self, dir: Path, image_id: str) -> Path:
        return self.folder(dir) / f"{image_id}{self.suffix}"

    def write(self, dir: Path, maps: ImageMaps) -> Path:
        if self.needs_image and maps.image is None:
            raise ValueError(f"format {self.name!r} needs the image of {maps.image_id!r}")
        return atomic_write(self.path(dir, maps.image_id), lambda tmp: self._save(tmp, maps))

    def _save(self, tmp: Path, maps: ImageMaps) -> None:
        raise NotImplementedError


def _save_npy(tmp: Path, obj: Any) -> None:
    # a file object, not a name: np.save would append ".npy" to the temporary name
    with open(tmp, "wb") as f:
        np.save(f, obj, allow_pickle=True)


def _check_label_range(keys: np.ndarray) -> None:
    if len(keys) and keys.max() + 1 >= IGNORE:
        raise ValueError(f"class id {int(keys.max())} + 1 collides with the ignore label {IGNORE}")


def _seed_indices(high_res: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) int64 channel index after putting a constant map ``threshold`` in front:
    0 = background, i = the i-th map. The same rule (strict >, ties to background) as the
    evaluated seeds, and as IRN's ``np.argmax(np.pad(..., constant_values=t))``."""
    channels = torch.arange(1, high_res.shape[0] + 1)
    return seeds_from_cams(torch.from_numpy(high_res), channels, threshold).numpy()


@dataclass(frozen=True)
class IrnNpy(_FileFormat):
    """IRN / official LPCAM ``<id>.npy``: ``np.save`` of ``{"keys", "cam", "high_res"}``.

    Read with ``np.load(path, allow_pickle=True).item()``; needs torch to unpickle (lpcam reads it back
    with :func:`lpcam.safe_load.load_npy`, which runs no code). ``cam``
    is a CPU float32 torch tensor because IRN's and LPCAM's ``make_sem_seg_labels`` call
    ``cam.cuda()`` on it; ``high_res`` is numpy (IRN's and LPCAM's ``make_cam``: every reader
    pads it with ``np.pad``); ``keys`` is numpy int64 as in LPCAM's ``make_lpcam`` (IRN
    stores a torch tensor; readers only do ``keys + 1`` / ``np.pad`` / ``np.repeat``, which
    treat both alike).
    """

    name: ClassVar[str] = "irn"
    suffix: ClassVar[str] = ".npy"

    def _save(self, tmp: Path, maps: ImageMaps) -> None:
        payload = {
            "keys": maps.keys.copy(),
            "cam": torch.tensor(maps.stride4, dtype=torch.float32),
            "high_res": maps.high_res.copy(),
        }
        _save_npy(tmp, payload)


@dataclass(frozen=True)
class Npz(_FileFormat):
    """The ``irn`` arrays without pickle: ``<id>.npz`` with ``keys``, ``cam``, ``high_res``.

    Loads with ``np.load(path, allow_pickle=False)``, without torch, and cannot run code on
    load: the format to archive or to share maps in.
    """

    name: ClassVar[str] = "npz"
    suffix: ClassVar[str] = ".npz"

    def _save(self, tmp: Path, maps: ImageMaps) -> None:
        with open(tmp, "wb") as f:  # a file object: savez would append ".npz" to the name
            np.savez_compressed(f, keys=maps.keys, cam=maps.stride4, high_res=maps.high_res)


@dataclass(frozen=True)
class SeedPng(_FileFormat):
    """Seed pseudo-mask ``<id>.png``: class id (``keys + 1``) where the highest map is
    strictly above ``threshold``, 0 elsewhere.

    Computed by ``seeds_from_cams``, so the exported seeds are exactly the evaluated ones.
    ``palette=True`` writes a palette PNG with VOC's colours (read the ids with PIL, like VOC's
    ``SegmentationClass``); ``palette=False`` a plain 8-bit grey PNG, which is what readers
    using ``imageio.imread`` need (imageio expands palette PNGs to RGB).
    """

    threshold: float
    palette: bool = True

    name: ClassVar[str] = "png"
    suffix: ClassVar[str] = ".png"

    def _save(self, tmp: Path, maps: ImageMaps) -> None:
        _check_label_range(maps.keys)
        seeds = seeds_from_cams(torch.from_numpy(maps.high_res), torch.from_numpy(maps.keys + 1), self.threshold)
        _save_label_png(tmp, seeds.numpy().astype(np.uint8), self.palette)


def _save_label_png(tmp: Path, mask: np.ndarray, palette: bool) -> None:
    if palette:
        save_palette_png(mask, tmp)
    else:
        Image.fromarray(mask).save(tmp, format="PNG")


@dataclass(frozen=True)
class MctformerNpy(_FileFormat):
    """MCTformer ``<id>.npy``: ``np.save`` of ``{class index: (H, W) float32 map}``.

    Class indices are 0-based Python ints (MCTformer's evaluation and PSA steps put map ``k``
    in channel ``k + 1``, background first). MCTformer min-max normalises every map,
    ``(x - min) / (max - min + 1e-8)``; ``minmax=True`` does the same, so that thresholds
    tuned in MCTformer's pipeline mean the same here (for maps whose minimum is 0 it changes
    nothing but rounding); ``minmax=False`` keeps our max-normalised maps. An image without
    labels gets an empty dict (MCTformer writes no file for it, and its evaluation cannot
    read an empty one).
    """

    minmax: bool = True

    name: ClassVar[str] = "mctformer"
    suffix: ClassVar[str] = ".npy"

    def _save(self, tmp: Path, maps: ImageMaps) -> None:
        cams = maps.high_res
        if self.minmax:
            low = cams.min(axis=(1, 2), keepdims=True)
            high = cams.max(axis=(1, 2), keepdims=True)
            cams = ((cams - low) / (high - low + np.float32(1e-8))).astype(np.float32)
        _save_npy(tmp, {int(k): cams[i].copy() for i, k in enumerate(maps.keys)})


@functools.lru_cache(maxsize=None)
def crf_available() -> bool:
    """Whether ``pydensecrf`` (PyPI ``pydensecrf2`` or ``pydensecrf``) can be imported.

    Imported, not just looked up: a package whose C++ extension failed to build is found but
    unusable, and must count as absent rather than fail on the first image.
    """
    try:
        import pydensecrf.densecrf  # noqa: F401
        import pydensecrf.utils  # noqa: F401
    except ImportError:
        return False
    return True


def _crf_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, steps: int, gt_prob: float) -> np.ndarray:
    """IRN's ``crf_inference_label``: a dense CRF started from a hard labelling.

    Unary: ``gt_prob`` on the given label, the rest spread over the others; pairwise: a
    Gaussian (sxy 3, compat 3) and a bilateral kernel (sxy 50, srgb 5, compat 10) on the RGB
    image; ``steps`` mean-field iterations; the most probable label per pixel.
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    h, w = labels.shape
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(image), compat=10)
    q = np.asarray(crf.inference(steps), dtype=np.float32).reshape(n_labels, h, w)
    return q.argmax(axis=0)


@dataclass(frozen=True)
class IrLabelPng(_FileFormat):
    """IRN's ``cam_to_ir_label`` output ``<id>.png``: the labels IRN (and AMN) train on.

    Seeds at ``fg_threshold`` give the confident foreground, seeds at ``bg_threshold`` the
    confident background (each optionally refined by a dense CRF on the image); a pixel is
    its class (``keys + 1``) where confidently foreground, 0 where neither seed says
    foreground, and 255 (unsure) in between. Thresholds in the public code: IRN 0.30 / 0.05
    (the defaults here), official LPCAM 0.45 / 0.25, AMN 0.45 / 0.15.

    ``crf=False`` (the default) labels the seeds as they are; ``crf=True`` refines them as IRN
    does and fails at once without ``pydensecrf``. The default never depends on what happens to
    be installed: the same command gives the same labels on every machine (with and without the
    CRF they agreed on 86.5 % of the benchmark's pixels). Written as a plain 8-bit grey PNG as
    IRN writes it, because IRN reads it with ``imageio.imread``, which expands palette PNGs to RGB.
    """

    fg_threshold: float = 0.30
    bg_threshold: float = 0.05
    crf: bool = False
    crf_steps: int = 10
    crf_gt_prob: float = 0.7
    palette: bool = False

    name: ClassVar[str] = "ir_label"
    suffix: ClassVar[str] = ".png"

    def __post_init__(self) -> None:
        if self.bg_threshold > self.fg_threshold:
            raise ValueError(f"bg_threshold {self.bg_threshold} > fg_threshold {self.fg_threshold}")
        if self.crf is True and not crf_available():
            raise ImportError("ir_label with crf=True needs pydensecrf (pip install pydensecrf2)")

    @property
    def needs_image(self) -> bool:  # type: ignore[override]
        return self.crf

    def labels(self, maps: ImageMaps) -> np.ndarray:
        """(H, W) uint8 IR label of one image (what ``write`` saves)."""
        _check_label_range(maps.keys)
        if len(maps.keys) == 0:  # nothing labelled: all confident background (IRN's rule gives the same)
            return np.zeros(maps.size, np.uint8)
        lut = np.concatenate([[0], maps.keys + 1])
        fg = lut[self._refine(maps, _seed_indices(maps.high_res, self.fg_threshold))]
        bg = lut[self._refine(maps, _seed_indices(maps.high_res, self.bg_threshold))]
        return np.where(fg > 0, fg, np.where(bg == 0, 0, IGNORE)).astype(np.uint8)

    def _refine(self, maps: ImageMaps, indices: np.ndarray) -> np.ndarray:
        if not self.crf:
            return indices
        if maps.image is None:
            raise ValueError(f"ir_label with a CRF needs the image of {maps.image_id!r}")
        n_labels = len(maps.keys) + 1
        return _crf_labels(maps.image, indices, n_labels, self.crf_steps, self.crf_gt_prob)

    def _save(self, tmp: Path, maps: ImageMaps) -> None:
        _save_label_png(tmp, self.labels(maps), self.palette)


FORMATS: dict[str, type] = {
    fmt.name: fmt for fmt in (IrnNpy, Npz, SeedPng, MctformerNpy, IrLabelPng)
}


def make_format(name: str, **options: Any) -> ExportFormat:
    """The format called ``name`` with its options (e.g. ``make_format("png", threshold=0.25)``)."""
    try:
        cls = FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown export format {name!r}; known: {sorted(FORMATS)}") from None
    return cls(**options)


def read_irn(folder: Path, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``keys`` and ``high_res`` of ``<folder>/<image_id>.npy`` (an export's ``irn`` folder, or
    any IRN ``cam_out_dir``), read as IRN's ``eval_cam`` reads it."""
    record = load_npy(Path(folder) / f"{image_id}{IrnNpy.suffix}", torch_tensors=True)  # no code runs on load
    return np.asarray(record["keys"]), np.asarray(record["high_res"])
