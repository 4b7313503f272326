"""What every dataset preparation shares: a tree appears under its name complete, or not at all.

A preparation builds its tree in a staging folder beside the target, writes
:data:`MARKER` (what it holds, where it came from) last, and renames the staging tree to the
target in one step. So the target is either absent, complete (it has the marker), or not lpcam's
(no marker: left alone); a staging folder left by a killed preparation is removed and redone.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from lpcam.errors import InputError

log = logging.getLogger(__name__)

MARKER = ".lpcam-prepared.json"
STAGING = ".lpcam-staging"


@dataclass(frozen=True)
class Prepared:
    root: Path
    counts: dict[str, int]  # images per split
    done_before: bool  # the tree was complete already: nothing was done


def completed(root: Path) -> Prepared | None:
    """The tree at ``root`` if a preparation finished it; refuses a tree lpcam did not write."""
    if (root / MARKER).is_file():
        return Prepared(root, json.loads((root / MARKER).read_text())["counts"], done_before=True)
    if root.exists():
        raise InputError(
            f"{root}: exists but was not prepared by lpcam (no {MARKER}); use it as it is (without "
            f"dataset.download=true), or move it away and run again"
        )
    return None


def check_space(directory: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise InputError(f"{directory}: {what} need about {needed / 1e9:.1f} GB there, {free / 1e9:.1f} GB free; "
                         f"make room or choose another folder")  # fmt: skip


def fresh_staging(root: Path) -> Path:
    """An empty staging folder for ``root`` (one a killed preparation left is removed first)."""
    staging = root.parent / f"{STAGING}-{root.name}"
    if staging.exists():
        log.info("%s: an earlier preparation stopped before it finished; starting it again", staging)
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def finish(tree: Path, root: Path, staging: Path, counts: dict[str, int], sources: dict[str, str]) -> Prepared:
    """Mark ``tree`` complete and move it to ``root`` in one rename; the staging folder goes."""
    (tree / MARKER).write_text(json.dumps({"counts": counts, "sources": sources}, indent=1) + "\n")
    tree.rename(root)
    shutil.rmtree(staging)
    return Prepared(root, counts, done_before=False)
