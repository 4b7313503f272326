"""The ``dataset.*`` settings every datamodule shares, checked when the datamodule is built.

Hydra's ``instantiate`` hands them to :class:`~lpcam.data.datamodule.SegmentationDataModule`
before any data is generated or any training starts, so an impossible value (``batch_size=0``,
a negative ``num_workers``, an empty split name) is refused there in one line naming the field,
as :class:`~lpcam.prototypes.settings.PrototypeSettings` does for ``lpcam.*``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from lpcam.data.checks import BAD_IMAGES, duplicate_names
from lpcam.errors import InputError


def _whole(least: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least


def _name(v: Any) -> bool:
    return isinstance(v, str) and v.strip() == v and v != ""


def _class_names(v: Any) -> bool:
    if v is None:
        return True
    return not isinstance(v, str) and len(v) > 0 and all(_name(n) for n in v) and duplicate_names(list(v)) is None


# field -> (check, what is expected)
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "root": (lambda v: isinstance(v, str) and v.strip() != "", "the dataset's folder"),
    "name": (_name, "a non-empty name"),
    "train_split": (_name, "a split name (ImageSets/Segmentation/<name>.txt)"),
    "val_split": (lambda v: v is None or _name(v), "a split name, or null for no checkpoint selection"),
    "eval_split": (_name, "a split name (ImageSets/Segmentation/<name>.txt)"),
    "batch_size": (_whole(1), "a whole number ≥ 1"),
    "eval_batch_size": (_whole(1), "a whole number ≥ 1"),
    "num_workers": (_whole(0), "a whole number ≥ 0 (0: load in the main process)"),
    "bad_images": (lambda v: v in BAD_IMAGES, " or ".join(BAD_IMAGES)),
    "prototype_split": (lambda v: v is None or _name(v), "a split name, or null for the training split"),
    "images_per_class": (lambda v: v is None or _whole(1)(v), "a whole number ≥ 1, or null for every image"),
    "class_names": (_class_names, "null, or a list of distinct, non-empty class names"),
}


def check_settings(values: dict[str, Any]) -> None:
    """Refuse the first impossible value among ``values`` (field -> value), naming the field."""
    for key, value in values.items():
        ok, expected = CHECKS[key]
        if not ok(value):
            raise InputError(f"dataset.{key}={_shown(value)}: expected {expected}")


def _shown(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


@dataclass(frozen=True)
class DataSettings:
    """The shared ``dataset.*`` settings of a datamodule; checked when built."""

    root: str
    name: str
    train_split: str
    val_split: str | None
    eval_split: str
    batch_size: int
    eval_batch_size: int
    num_workers: int
    bad_images: str = "error"  # an unreadable image: "error" stops the run, "skip" leaves it out with a warning
    prototype_split: str | None = None  # the images prototypes come from (None: train_split)
    images_per_class: int | None = None  # at most this many prototype images per class
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.class_names is not None and not isinstance(self.class_names, (str, tuple)):
            object.__setattr__(self, "class_names", tuple(self.class_names))  # Hydra hands lists over
        check_settings(asdict(self))

    @classmethod
    def of(cls, root: Any, class_names: Sequence[str] | None, **values: Any) -> "DataSettings":
        return cls(root=str(root) if root is not None else None, class_names=class_names or None, **values)  # type: ignore[arg-type]
