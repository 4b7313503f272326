"""The boundary network trained by Lightning from IR labels, as IRN trains it."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lpcam.models.backbones import small_resnet
from lpcam.refine.affinity_loss import IGNORE, affinity_loss
from lpcam.refine.boundary_module import BoundaryModule, labels_on_grid


def samples(n: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        image = torch.rand(3, 64, 64, generator=g) * 0.3
        label = torch.zeros(64, 64, dtype=torch.long)
        x0 = 16 + 2 * i
        image[:, 16:48, x0 : x0 + 24] += 0.6  # an object
        label[16:48, x0 : x0 + 24] = 3
        label[12:52, x0 - 4 : x0 + 28][(label[12:52, x0 - 4 : x0 + 28] == 0)] = IGNORE  # unsure around it
        label[18:46, x0 + 2 : x0 + 22] = 3
        out.append({"image": image, "ir_label": label})
    return out


def test_labels_reach_the_grid_by_nearest_sampling():
    labels = torch.tensor([[[0, 0, 3, 3], [0, 0, 3, 3], [IGNORE, IGNORE, 3, 3], [IGNORE, IGNORE, 3, 3]]])
    assert labels_on_grid(labels, (2, 2)).tolist() == [[[0, 3], [IGNORE, 3]]]


def test_lightning_trains_the_head_from_ir_labels_and_leaves_the_backbone_as_it_was():
    torch.manual_seed(0)
    module = BoundaryModule(small_resnet(), radius=5, lr=0.5)
    frozen = {k: v.clone() for k, v in module.net.backbone.state_dict().items()}
    data = samples()
    batch = torch.utils.data.default_collate(data)

    def loss() -> float:
        with torch.no_grad():
            logits = module.net(batch["image"])[:, 0]
            return affinity_loss(torch.sigmoid(logits), labels_on_grid(batch["ir_label"], logits.shape[-2:]), 5).item()

    before = loss()
    trainer = pl.Trainer(max_epochs=15, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=4, shuffle=True))
    assert loss() < 0.7 * before
    after = module.net.backbone.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)  # weights and BatchNorm statistics
