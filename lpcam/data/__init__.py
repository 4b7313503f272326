"""Datasets and datamodules.

Registers the ``lpcam.folder_name`` config resolver here, so that any config naming a dataset
after its folder (``conf/dataset/custom.yaml``) resolves wherever lpcam's data code is imported,
including Hydra's run directory (``outputs/${dataset.name}/...``), resolved before the job runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def folder_name(root: Any) -> str:
    """A dataset's default name: the last component of its root (``/data/shapes/`` -> ``shapes``);
    ``custom`` while no root is given (the datamodule then reports the missing root)."""
    if root is None:
        return "custom"
    path = Path(str(root)).expanduser()
    return path.name or path.resolve().name or "custom"


if not OmegaConf.has_resolver("lpcam.folder_name"):
    OmegaConf.register_new_resolver("lpcam.folder_name", folder_name)
