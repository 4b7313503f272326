"""What a dataset holds, as a short digest: the caches' keys include it, so a dataset edited in place
(masks relabelled, ``classes.txt`` or a split file edited, ``cls_labels.npy`` replaced) never gets
a classifier or a feature pool computed from its former content.

A datamodule lists the files its training and prototypes read, by kind
(:meth:`lpcam.data.datamodule.SegmentationDataModule.content_files`). The small ones (split
files, ``classes.txt``, ``cls_labels.npy``) are hashed byte for byte; the per-image files
(images, masks, part maps) by name, size and modification time (``mtime_ns``), which every
editor, script and copy updates: stat-ing the default job's 6,900 files takes about 0.05 s,
reading them 0.1-0.15 s, but reading VOC's or COCO's would take seconds to minutes at each run.
What it cannot see: an edit that keeps a file's size and sets its old modification time back.
A copy of the dataset with new modification times gets a new digest (a cache miss, never a
wrong hit).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple


class FileGroup(NamedTuple):
    """Files of one kind, and whether their bytes are hashed (else name, size and mtime)."""

    paths: list[Path]
    by_content: bool


@dataclass(frozen=True)
class DataContent:
    """Per kind of file, a digest of what the dataset holds; ``key`` digests them all."""

    parts: dict[str, str]

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.parts, sort_keys=True).encode()).hexdigest()[:12]

    def changed_since(self, recorded: dict[str, str]) -> list[str]:
        """The kinds of file whose digest differs from an earlier ``parts`` record."""
        return sorted(k for k in set(self.parts) | set(recorded) if self.parts.get(k) != recorded.get(k))


def _group_digest(paths: Iterable[Path], by_content: bool) -> str:
    h = hashlib.sha1()
    for path in paths:
        h.update(str(path.name).encode() + b"\0")
        try:
            if by_content:
                h.update(path.read_bytes())
            else:
                st = path.stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:  # a missing file is a state of the data too (the data checks report it)
            h.update(b"<missing>")
        h.update(b"\0")
    return h.hexdigest()[:12]


def content_of(groups: dict[str, FileGroup]) -> DataContent:
    """The digest of each group of files (in the order given)."""
    return DataContent({name: _group_digest(g.paths, g.by_content) for name, g in groups.items()})
