"""The dataset preflight: every image and mask of the splits a run uses, checked before training.

Without it a bad file is met late: a truncated JPEG inside a DataLoader worker mid-epoch, a mask
label outside the classes after training, a missing mask when evaluation reaches it; or never:
a stray mask value is silently ignored. :func:`check_split` reads each file once, cheaply, and
stops at the first bad one with one line naming the file and the split file that lists it:

- **images**: present, not empty, identified by PIL whatever the suffix says (a PNG named ``.jpg``
  is read as a PNG; a text file named ``.jpg`` is refused), complete (JPEG: its end-of-image
  marker, with a full decode only when the marker is not at the end; PNG: ``verify()``, which checks
  every chunk's checksum; other formats: a full decode), and in a mode that reads as RGB
  (:data:`RGB_RULES`; 16-bit and float images are refused rather than clipped);
- **masks**: present, a palette or grey PNG of class ids, the size of their image, with values in
  0..C and 255 (ignore) only, decoded once (their values counted with ``np.bincount``);
- **classes**: every class has at least one training image (by the image-level labels, which
  come from the label file or the masks).

With ``bad_images="skip"`` an unreadable image (not a missing one, not a bad mask) is left out
with a warning instead, and the datamodule records it in ``results.json``.

:class:`CheckCache` keeps the facts read from each file (size, mode, mask values) keyed by its
(path, size, mtime_ns), so a rerun on the same files only stats them. The verdict itself (values
against the classes, class coverage) is recomputed from those facts each run, so a changed
classes.txt is always seen.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from lpcam.atomic import atomic_write
from lpcam.errors import InputError

log = logging.getLogger(__name__)

BAD_IMAGES = ("error", "skip")  # dataset.bad_images
JPEG_END = b"\xff\xd9"  # a JPEG's end-of-image marker
JPEG_TAIL = 64  # bytes searched for it at the end of the file (some writers pad after it)

# image modes and how they become RGB (PIL's convert("RGB"), which every reader calls)
RGB_RULES = {
    "RGB": "as is",
    "L": "grey replicated to 3 channels",
    "1": "black and white replicated to 3 channels",
    "P": "palette indices mapped to their colours",
    "RGBA": "alpha dropped (not composited)",
    "RGBX": "padding byte dropped",
    "LA": "grey replicated, alpha dropped",
    "PA": "palette colours, alpha dropped",
    "CMYK": "converted by PIL's CMYK formula",
    "YCbCr": "converted to RGB",
}
MASK_MODES = ("P", "L", "1", "I;16", "I")  # class ids: palette, grey (8- or 16-bit), binary


LAYOUT_HELP = (
    "expected the PASCAL VOC layout: JPEGImages/<id>.jpg, SegmentationClass/<id>.png, "
    "ImageSets/Segmentation/<split>.txt (and optionally classes.txt, cls_labels.npy)"
)


class DatasetLayoutError(InputError, FileNotFoundError):
    """Raised with the path that is missing and the layout that was expected."""


class DataError(InputError, ValueError):
    """A file of the dataset cannot be used as it is; the message names it."""


class BadImage(DataError):
    """An image that cannot be read, or not as RGB."""


class BadMask(DataError):
    """A mask that does not fit its image or the classes."""


class BadSplit(DataError):
    """A split file that lists nothing usable."""


class BadClasses(DataError):
    """Class names that repeat, or a class no training image shows."""


@dataclass(frozen=True)
class Item:
    """One image of a split as the preflight sees it: its files and, when a label source gives
    them, its classes (0-based); ``label=None`` means the classes come from the mask."""

    id: str
    image: Path
    mask: Path | None = None  # None: the dataset makes masks otherwise (COCO's annotations)
    label: tuple[int, ...] | None = None


@dataclass
class SplitCheck:
    """What the preflight found in one split."""

    split: str
    source: Path  # the split file (or annotation file) listing the images
    images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, the reason, one line)
    converted: dict[str, str] = field(default_factory=dict)  # id -> mode, of the images not in RGB
    classes: set[int] = field(default_factory=set)  # 0-based classes of the images kept


def inspect_image(path: Path) -> tuple[int, int, str]:
    """(width, height, mode) of a readable image; :class:`BadImage` naming ``path`` otherwise.
    A missing file is a :class:`DatasetLayoutError` (a layout problem, never skipped)."""
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: image not found; {LAYOUT_HELP}")
    if path.stat().st_size == 0:
        raise BadImage(f"{path}: empty file (0 bytes)")
    fmt = "image"
    try:
        with Image.open(path) as image:
            fmt, (width, height), mode = image.format or "image", image.size, image.mode
            if mode not in RGB_RULES:
                raise BadImage(f"{path}: a {fmt} in mode {mode} (16-bit, float or unusual channels); convert it to 8-bit RGB")
            if fmt == "JPEG":
                if not _jpeg_ends(path):
                    image.load()  # no end marker: decode to tell a truncated file from trailing bytes
            elif fmt == "PNG":
                image.verify()
            else:
                image.load()
    except UnidentifiedImageError:
        raise BadImage(f"{path}: not an image (PIL cannot identify its format){_text_hint(path)}") from None
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever PIL raises on a corrupt file, the file is the fault
        raise BadImage(f"{path}: unreadable {fmt} ({one_line(err)})") from err
    return width, height, mode


def inspect_mask(path: Path) -> tuple[int, int, list[int]]:
    """(width, height, the values present) of a class-id mask; :class:`BadMask` naming ``path`` otherwise."""
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: mask not found; {LAYOUT_HELP}")
    try:
        with Image.open(path) as mask:
            if mask.mode not in MASK_MODES:
                raise BadMask(f"{path}: a colour mask (mode {mask.mode}); expected class ids: a palette or grey PNG")
            values = np.asarray(mask)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt or empty file
        raise BadMask(f"{path}: unreadable mask ({one_line(err)})") from err
    if values.dtype == np.uint8 or values.dtype == bool:
        present = np.flatnonzero(np.bincount(values.ravel().astype(np.uint8), minlength=256))
    else:
        present = np.unique(values)
    return values.shape[1], values.shape[0], [int(v) for v in present]


def _jpeg_ends(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - JPEG_TAIL))
        return JPEG_END in f.read()


def _text_hint(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(64)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return "; it starts like a text file"


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def values_text(values: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


class CheckCache:
    """The facts read from each file, keyed by (path, size, mtime_ns): a rerun only stats the files.

    One JSON file per dataset root under ``dir``; written atomically, so parallel jobs each leave
    a complete one (the last wins). An unreadable or foreign cache file is ignored."""

    VERSION = 1

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, list] = {}
        self.changed = False
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == self.VERSION:
                    self.entries = dict(data["files"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                log.warning("dataset check cache %s unreadable: checking every file again", path)

    @classmethod
    def for_root(cls, directory: Path | None, root: Path) -> "CheckCache":
        from lpcam.cache import digest

        if directory is None:
            return cls(None)
        return cls(Path(directory) / f"{digest(str(root.resolve()))}.json")

    def get(self, path: Path, kind: str, inspect) -> tuple:
        """``inspect(path)``, or what it returned for this file before (same size and mtime)."""
        try:
            st = path.stat()
        except (OSError, ValueError):
            return inspect(path)  # missing: inspect says so
        key = f"{kind}:{path}"
        stamp = [st.st_size, st.st_mtime_ns]
        entry = self.entries.get(key)
        if entry is not None and entry[:2] == stamp:
            return tuple(entry[2])
        facts = inspect(path)
        self.entries[key] = [*stamp, list(facts)]
        self.changed = True
        return facts

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        payload = json.dumps({"version": self.VERSION, "files": self.entries})
        try:
            atomic_write(self.path, lambda tmp: tmp.write_text(payload))
        except OSError as err:  # a read-only cache costs a rerun its speed, not the run
            log.warning("dataset check cache not written (%s): the next run checks every file again", one_line(err))
        self.changed = False


def check_split(
    split: str,
    source: Path,
    items: Iterable[Item],
    num_classes: int,
    bad_images: str = "error",
    cache: CheckCache | None = None,
) -> SplitCheck:
    """Check every image (and mask) of one split; see the module docstring.

    Raises the first fault as a :class:`DataError` (or ``DatasetLayoutError`` for a missing
    file) whose one-line message names the file and ``source``; with ``bad_images="skip"``
    unreadable images are collected in the result instead."""
    cache = cache or CheckCache(None)
    result = SplitCheck(split, source)
    allowed = set(range(num_classes + 1)) | {255}
    for item in items:
        where = f" (image {item.id} of {source})"
        try:
            width, height, mode = cache.get(item.image, "image", inspect_image)
        except BadImage as err:
            if bad_images != "skip":
                raise type(err)(f"{err}{where}; dataset.bad_images=skip leaves such images out") from err
            result.skipped.append((item.id, f"{err}{where}"))
            continue
        except InputError as err:
            raise type(err)(f"{err}{where}") from err
        result.images += 1
        if mode != "RGB":
            result.converted[item.id] = mode
        values: list[int] = []
        if item.mask is not None:
            try:
                mask_w, mask_h, values = cache.get(item.mask, "mask", inspect_mask)
            except InputError as err:
                raise type(err)(f"{err}{where}") from err
            if (mask_w, mask_h) != (width, height):
                raise BadMask(f"{item.mask}: mask is {mask_w}x{mask_h} px, its image {item.image.name} {width}x{height} px{where}")
            stray = [v for v in values if v not in allowed]
            if stray:
                raise BadMask(
                    f"{item.mask}: mask values {values_text(stray)} outside the classes 0..{num_classes} "
                    f"and 255 (ignore){where}; fix the mask or the class list"
                )
        if item.label is not None:
            result.classes.update(item.label)
        else:
            result.classes.update(v - 1 for v in values if 0 < v <= num_classes)
    if result.images == 0:
        raise BadSplit(f"{source}: no readable image in split {split} ({len(result.skipped)} left out as unreadable)")
    return result


def check_classes(check: SplitCheck, class_names: Sequence[str], classes_source: str) -> None:
    """Every class has at least one image in the training split ``check``: a class the classifier
    never sees gets no CAM and no prototype and would score zero without a word."""
    missing = [name for c, name in enumerate(class_names) if c not in check.classes]
    if missing:
        raise BadClasses(
            f"class {missing[0]!r}{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''} "
            f"has no image in the training split {check.source} ({check.split}); add images of it "
            f"or remove it from {classes_source}"
        )


def duplicate_names(names: Sequence[str]) -> str | None:
    """The first name that appears twice, else None."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def mode_counts(checks: Iterable[SplitCheck]) -> dict[str, int]:
    """How many distinct images of each non-RGB mode the checks met (an image in two splits counts once)."""
    modes: dict[str, str] = {}
    for check in checks:
        modes.update(check.converted)
    return dict(sorted(Counter(modes.values()).items()))


def mode_summary(counts: dict[str, int]) -> str:
    """'12 L: grey replicated to 3 channels; 1 RGBA: alpha dropped (not composited)'."""
    return "; ".join(f"{n} {mode}: {RGB_RULES[mode]}" for mode, n in counts.items())

