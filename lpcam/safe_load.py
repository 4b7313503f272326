"""Reading files without running code: every file lpcam reads back goes through here.

Pickle, which ``torch.load(weights_only=False)`` and ``np.load(allow_pickle=True)`` use, calls
whatever function a file names, so a crafted checkpoint, prototypes file, shared cache entry or
``cls_labels.npy`` would run code on the machine that opens it. Instead:

- torch files (checkpoints, prototypes, the feature cache) are read with
  ``torch.load(weights_only=True)``: tensors and plain containers only. lpcam saves nothing else
  (a checkpoint's hyperparameters are a plain dict), so no type needs allow-listing;
- pickled ``.npy`` files (IRN's ``cls_labels.npy``, the ``irn`` export format) are read by a
  restricted unpickler that admits only numpy's array, dtype and scalar reconstruction (and, for
  the ``irn`` format, a torch tensor, itself read with ``weights_only=True``).

Anything else, and a truncated, empty or foreign file, is refused with one line naming the file
(:class:`UnreadableFile`, an InputError), never a traceback or a half-read object.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpcam.errors import InputError, MissingInput


class UnreadableFile(InputError):
    """A file lpcam reads back that is damaged, of another format, or would run code."""


def _first_line(err: BaseException) -> str:
    """The first sentence of an error message (torch's run on for a paragraph)."""
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(err).__name__


def torch_load(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``what`` (e.g. ``"lpcam.prototypes_path"``,
    ``"feature cache entry"``) names the file's role in the one-line error."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{what}={path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(err))
        if blocked:
            raise UnreadableFile(
                f"{what}={path}: refused: it holds a Python object ({blocked.group(1)}) besides tensors and plain "
                f"containers, and loading it could run code; lpcam reads only files it wrote (recreate this one)"
            ) from None
        raise UnreadableFile(f"{what}={path}: not a file torch.save wrote, or damaged") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, KeyError, IndexError) as err:
        raise UnreadableFile(
            f"{what}={path}: unreadable (truncated, empty or another format): {_first_line(err)}"
        ) from None


def _safe_storage_from_bytes(data: bytes) -> Any:
    """What pickle's ``torch.storage._load_from_bytes`` does, with ``weights_only=True``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(module, "_reconstruct"): np._core.multiarray._reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): np._core.multiarray.scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("_codecs", "encode"): __import__("codecs").encode,  # bytes in protocol-2 pickles
}
TORCH_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _safe_storage_from_bytes,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,  # a tensor's (empty) hooks
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the allow-listed globals and refuses any other by name."""

    def __init__(self, file, allowed: dict[tuple[str, str], Any], source: Path) -> None:
        super().__init__(file)
        self.allowed, self.source = allowed, source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnreadableFile(
                f"{self.source}: refused: it would call {module}.{name} when loaded (pickled code, not data); "
                f"lpcam reads only numpy arrays, dtypes and scalars in plain containers from a .npy file"
            ) from None


def _npy_header(f) -> np.dtype:
    fmt = np.lib.format
    version = fmt.read_magic(f)
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version in readers:
        return readers[version](f)[2]
    return fmt._read_array_header(f, version)[2]  # 3.0: utf-8 field names


def load_npy(path: str | Path, torch_tensors: bool = False) -> Any:
    """A ``.npy`` file as ``np.load(path, allow_pickle=True)`` reads it, without running code: an
    array of plain dtype as is, a pickled object (``np.save`` of a dict) through the restricted
    unpickler, a 0-d object array unwrapped (``.item()``). ``torch_tensors`` also admits torch
    tensors (the ``irn`` export format)."""
    path = Path(path)
    if not path.is_file():
        missing = MissingInput(f"{path}: no such file")
        missing.filename = str(path)
        raise missing
    allowed = {**NUMPY_GLOBALS, **(TORCH_GLOBALS if torch_tensors else {})}
    try:
        with open(path, "rb") as f:
            dtype = _npy_header(f)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            array = _RestrictedUnpickler(f, allowed, path).load()
    except UnreadableFile:
        raise
    except (ValueError, EOFError, OSError, pickle.UnpicklingError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError) as err:  # fmt: skip
        raise UnreadableFile(f"{path}: not a readable .npy file (truncated, empty or another format): {_first_line(err)}") from None
    if isinstance(array, np.ndarray) and array.dtype.hasobject and array.shape == ():
        return array.item()
    return array


def load_label_file(path: str | Path) -> dict:
    """IRN's ``cls_labels.npy``: ``np.save`` of a dict {image id: multi-hot labels}, read safely."""
    labels = load_npy(path)
    if not isinstance(labels, dict) or not labels:
        raise UnreadableFile(
            f"{path}: expected np.save of a non-empty dict {{image id: multi-hot class labels}} (IRN's "
            f"cls_labels.npy), found {type(labels).__name__}; fix or delete it (labels then come from the masks)"
        )
    return labels
