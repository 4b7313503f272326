"""Training augmentation: seeded in the main process, distinct across DataLoader workers."""

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lpcam.data.transforms import TrainTransform


class _Crops(Dataset):
    """Every item is the same 8×8 ramp; the transform's random crop offset is all that varies."""

    def __init__(self, transform: TrainTransform) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> int:
        ramp = np.arange(64, dtype=np.uint8).reshape(8, 8)
        item = {"image": np.stack([ramp] * 3, -1), "mask": ramp.copy(), "parts": np.zeros_like(ramp)}
        out = self.transform(item)
        return int(out["mask"][0, 0])  # identifies the crop offset


def test_main_process_is_seeded_by_config():
    a = [_Crops(TrainTransform(crop=4, flip=False, seed=3))[i] for i in range(8)]
    b = [_Crops(TrainTransform(crop=4, flip=False, seed=3))[i] for i in range(8)]
    assert a == b


def test_workers_do_not_repeat_each_others_augmentations():
    torch.manual_seed(0)
    loader = DataLoader(_Crops(TrainTransform(crop=4, flip=False, seed=3)), batch_size=4, num_workers=2)
    first, second = [b.tolist() for b in loader]  # worker 0 makes the first batch, worker 1 the second
    assert first != second
