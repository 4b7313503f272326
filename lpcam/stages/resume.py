"""Resumable training: where a training's checkpoints live until it ends, which one a run resumes
from, and the random state they carry so that the resumed run is the uninterrupted one.

While a classifier trains, its checkpoints live in an in-progress folder: ``last.ckpt``, saved at
every epoch end, and ``best.ckpt``, the best epoch so far. Only a finished training's best
checkpoint is published (``<run_dir>/checkpoints/best.ckpt``, the classifier cache), so an
interrupted run leaves no ``best.ckpt`` that looks complete. The folder is the classifier cache
entry's ``in_progress/`` when the cache is on, where the next run with the same training config
finds it (under the entry's lock: one job trains, the others wait), else
``<run_dir>/checkpoints/in_progress/``. The ``resume`` setting:

- ``auto`` (default): resume from the folder's ``last.ckpt`` when there is one;
- ``false``: start over (the folder is emptied);
- a path to a ``last.ckpt``: resume from it, and keep checkpointing into its folder.

Bit for bit on CPU: Lightning restores the weights, the optimizer, the schedule, the epoch and the
checkpoint callback's best score; :class:`TrainingRandomness` restores the random streams that
decide the remaining epochs' data order and augmentation, so a run resumed from the end of epoch
``e`` draws what the uninterrupted run drew from epoch ``e + 1`` on. A checkpoint is saved only at
an epoch's end: a run stopped mid-epoch redoes that epoch. With ``dataset.num_workers > 0`` the
workers' augmentation streams live in the worker processes and are not saved: a resumed run
trains correctly but draws other augmentations (and batches) from the resumed epoch on.
"""

from __future__ import annotations

import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lpcam.atomic import torch_save
from lpcam.cache import secondary_process
from lpcam.errors import InputError, MissingInput

log = logging.getLogger(__name__)

LAST = "last.ckpt"


def resume_setting(cfg: DictConfig) -> str | None:
    """``resume`` checked: ``"auto"``, None (start over) or the path of an existing checkpoint."""
    value = cfg.get("resume", "auto")
    if value is True or value == "auto":
        return "auto"
    if value is None or value is False:
        return None
    path = Path(str(value))
    if cfg.get("ckpt_path"):
        raise InputError(
            f"resume={value}: ckpt_path= loads a trained classifier and skips training, resume= continues a "
            "training; give one of them"
        )
    if not path.is_file():
        raise MissingInput(f"resume={value}: no such checkpoint (give the last.ckpt of an interrupted training, auto or false)")
    return str(path)


@dataclass(frozen=True)
class TrainingProgress:
    """Where a training checkpoints (``folder``), what it resumes from (``resume_from``, None: from
    the start) and whether the folder is this training's own (removed once its result is published)."""

    folder: Path
    resume_from: Path | None
    owned: bool

    @classmethod
    def plan(cls, cfg: DictConfig, default_folder: Path) -> "TrainingProgress":
        setting = resume_setting(cfg)
        if setting not in ("auto", None):
            log.info("classifier: resuming the training from %s", setting)
            return cls(Path(setting).parent, Path(setting), owned=False)
        last = default_folder / LAST
        if setting == "auto" and last.is_file():
            log.info("classifier: resuming the interrupted training from %s (resume=false starts over)", last)
            return cls(default_folder, last, owned=True)
        if not secondary_process():  # a DDP job's first process decides, before the others start
            shutil.rmtree(default_folder, ignore_errors=True)  # a stopped training's leftovers, not resumed
        log.info("classifier: training; checkpoints in progress go to %s (the same command resumes from them)", default_folder)
        return cls(default_folder, None, owned=True)

    def discard(self) -> None:
        """Remove the folder once the training's result is published (only this training's own)."""
        if self.owned and not secondary_process():
            shutil.rmtree(self.folder, ignore_errors=True)


class TrainingRandomness(pl.Callback):
    """Saves with every checkpoint the random states that decide the rest of a training, and
    restores them when a training resumes from it: torch's global generator (the DataLoader's
    shuffling and its per-epoch seeds), numpy's and Python's, the CUDA generators, and the
    training augmentation's own generator (:class:`~lpcam.data.transforms.TrainTransform`).

    The states are taken when the checkpoint is written (at an epoch's end, after its validation)
    and put back before the resumed training draws anything. Stored as tensors, lists and ints, so
    the checkpoint loads with ``weights_only=True``."""

    def __init__(self) -> None:
        self._transform = None  # the training augmentation, known from ``setup`` on
        self._pending: dict | None = None  # its saved state, if restored before ``setup``

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._transform = getattr(trainer.datamodule, "train_transform", None)
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if self._transform is not None:
            state["augmentation"] = self._transform.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_tuples(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self._pending = state.get("augmentation")
        self._apply()

    def _apply(self) -> None:
        if self._pending is not None and self._transform is not None:
            self._transform.set_state(self._pending)
            self._pending = None


def _tuples(value: Any) -> Any:
    """Python's random state as ``random.setstate`` wants it (tuples, which a checkpoint may turn into lists)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written as every file another process may read here (:mod:`lpcam.atomic`): a
    temporary sibling renamed into place. Lightning's own writes through a temporary file in the
    system's temp folder, which is a copy, not a rename, when the checkpoints are on another file
    system (a shared cache), so a kill during it could leave a truncated ``last.ckpt``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        torch_save(checkpoint, path)
