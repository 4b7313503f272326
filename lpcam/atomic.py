"""Writing a file so that no reader ever sees half of it: a temporary sibling, then a rename.

Every file another process may read while it is written goes through here: results.json (sweep
reports), prototypes files and checkpoints (later jobs), the caches shared by a sweep's jobs. The
temporary name carries the process id, so parallel jobs writing the same file never collide.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch


def atomic_write(dst: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a temporary sibling of ``dst``, then rename it to ``dst``."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.partial-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, dst)
    except BaseException:  # an error or an interruption: leave nothing half-written behind
        tmp.unlink(missing_ok=True)
        raise
    return dst


def torch_save(obj: Any, dst: str | Path) -> Path:
    """``torch.save`` to ``dst`` atomically."""
    return atomic_write(dst, lambda tmp: torch.save(obj, tmp))
