"""The multi-label classifier whose CAMs we study (IRN's recipe, sized by config)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MultilabelAveragePrecision

from lpcam.models.backbones import Backbone


class Classifier(pl.LightningModule):
    """Backbone → global average pooling → 1×1 convolution without bias.

    No bias, so that a class score is exactly the mean over positions of ``w_c · f``: the CAM is
    that sum before pooling. Trained with the multi-label soft-margin loss, SGD with a poly
    schedule and a ``classifier_lr_mult``× learning rate on the new layer, as in IRN. With
    ``freeze_bn`` the BatchNorm statistics and affine parameters stay as loaded (pre-trained
    backbones); a backbone trained from scratch needs them learned.

    With ``freeze_backbone`` only the 1×1 classifier learns: the backbone stays in eval mode (its
    BatchNorm statistics as loaded) and out of the optimizer, and the training and validation
    batches carry each image's pooled feature (``batch["pooled"]``, computed once by
    :class:`~lpcam.data.pooled.PooledFeatures`) instead of the image. Pooling then the 1×1
    convolution is a linear map of the pooled feature, so :meth:`classify_pooled` gives the
    logits :meth:`forward` would. The backbone's parameters keep ``requires_grad``, so the
    gradient baselines still work on the trained classifier; no gradient reaches them in training.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        lr: float = 0.1,
        classifier_lr_mult: float = 10.0,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        poly_power: float = 0.9,
        freeze_bn: bool = False,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)
        self.val_ap = MultilabelAveragePrecision(num_labels=num_classes, average="macro")
        if freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)

    @property
    def weights(self) -> Tensor:
        """(C, D) classifier weights: the CAM of class c is ``weights[c] · f``."""
        return self.classifier.weight.flatten(1)

    def features(self, images: Tensor) -> Tensor:
        return self.backbone(images)

    def forward(self, images: Tensor) -> Tensor:
        feats = self.features(images)
        return self.classifier(feats.mean((2, 3), keepdim=True)).flatten(1)

    def classify_pooled(self, pooled: Tensor) -> Tensor:
        """Logits of (B, D) globally average-pooled features: the 1×1 convolution's weights as a
        linear map (the same product; oneDNN's convolution of a 1×1 input is ~1000× slower)."""
        return F.linear(pooled, self.weights)

    def logits(self, batch: dict) -> Tensor:
        """A training or validation batch's logits: from its pooled features (frozen backbone) or its images."""
        return self.classify_pooled(batch["pooled"]) if "pooled" in batch else self(batch["image"])

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.hparams.freeze_backbone:
            self.backbone.eval()
        elif self.hparams.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def on_fit_start(self) -> None:
        """Put the frozen parts in eval mode: Lightning fits the modules in the mode it finds them
        (it never calls ``train()``; its validation loop puts back each module's mode as it was), so
        the override of :meth:`train` alone would never run in a fit."""
        if self.hparams.freeze_backbone or self.hparams.freeze_bn:
            self.train()

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = F.multilabel_soft_margin_loss(self.logits(batch), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["label"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.logits(batch)
        loss = F.multilabel_soft_margin_loss(logits, batch["label"])
        self.val_ap.update(logits, batch["label"].long())
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["label"]), sync_dist=True)
        self.log("val/mAP", self.val_ap, prog_bar=True, batch_size=len(batch["label"]))

    def configure_optimizers(self):
        hp = self.hparams
        backbone = [] if hp.freeze_backbone else [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [
            {"params": backbone, "lr": hp.lr},
            {"params": list(self.classifier.parameters()), "lr": hp.lr * hp.classifier_lr_mult},
        ]
        groups = [g for g in groups if g["params"]]
        opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: (1 - min(step, total - 1) / total) ** hp.poly_power)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
