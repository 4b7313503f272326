"""The class-boundary network as a LightningModule, trained from IR labels as IRN trains it.

IRN (``step/train_irn.py``) trains its boundary branch for 3 epochs with SGD (learning rate 0.1,
weight decay 1e-4, the rate times (1 - step / steps)^0.9; its ``PolyOptimizer`` hands the weight
decay to SGD's momentum argument, so its momentum is 1e-4, none in effect) on batches of 32 images
and their IR labels,
the labels reduced to the network's stride-4 grid by nearest-neighbour sampling, with the affinity
loss of :mod:`lpcam.refine.affinity_loss` at radius 10. The backbone is frozen, so only the head's
parameters are optimised. A batch is a dict with ``image`` (B, 3, H, W) in [0, 1] and
``ir_label`` (B, H, W) class ids (0 background, ``IGNORE`` unsure), as the datasets give them.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from lpcam.models.backbones import Backbone
from lpcam.refine.affinity_loss import affinity_loss
from lpcam.refine.boundary_net import BoundaryNet


def labels_on_grid(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """IR labels (B, H, W) sampled (nearest) onto the network's grid (IRN's ``pil_rescale(label, 0.25, 0)``)."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


class BoundaryModule(pl.LightningModule):
    def __init__(
        self,
        backbone: Backbone,
        radius: int = 10,
        lr: float = 0.1,
        weight_decay: float = 1e-4,
        poly_power: float = 0.9,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.net = BoundaryNet(backbone)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits = self.net(batch["image"])[:, 0]
        labels = labels_on_grid(batch["ir_label"], logits.shape[-2:])
        loss = affinity_loss(torch.sigmoid(logits), labels, self.hparams.radius)
        self.log("refine/affinity_loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=self.hparams.lr, momentum=0.0, weight_decay=self.hparams.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        power = self.hparams.poly_power
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps) ** power)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
