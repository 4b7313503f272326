"""Builds the LPCAM prototypes when classifier training ends, from the best checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from lpcam.atomic import torch_save
from lpcam.models.classifier import Classifier
from lpcam.prototypes.build import build_prototypes
from lpcam.prototypes.store import Prototypes

CHECKPOINT_KEY = "lpcam_prototypes"


class PrototypeCallback(pl.Callback):
    """On fit end: reload the best checkpoint's weights, build the prototypes over the training
    split, save them to ``path`` and into the best checkpoint (so a checkpoint alone is enough to
    extract LPCAM later). The result is also left on ``pl_module.prototypes``.

    ``settings`` are the keyword arguments of :func:`build_prototypes` (the ``lpcam`` config).
    """

    def __init__(self, path: str | Path, settings: dict, progress: bool = True) -> None:
        self.path = Path(path)
        self.settings = dict(settings)
        self.progress = progress

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Classifier) -> None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            state = torch.load(best, map_location=pl_module.device, weights_only=False)["state_dict"]
            pl_module.load_state_dict(state)
        dm = trainer.datamodule
        protos = build_prototypes(
            pl_module, dm.prototype_dataloader(), dm.class_names, dataset=dm.name, progress=self.progress, **self.settings
        )
        if trainer.is_global_zero:
            protos.save(self.path)
            if best:
                ckpt = torch.load(best, map_location="cpu", weights_only=False)
                ckpt[CHECKPOINT_KEY] = protos.to_dict()
                torch_save(ckpt, best)
        pl_module.prototypes = protos

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: Classifier, checkpoint: dict) -> None:
        protos: Prototypes | None = getattr(pl_module, "prototypes", None)
        if protos is not None:
            checkpoint[CHECKPOINT_KEY] = protos.to_dict()
