"""The CPU trainer's precision follows what the CPU computes natively (lpcam/hardware.py)."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from lpcam import hardware


@pytest.mark.parametrize("native, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_cpu_training_precision_follows_native_bf16(tiny, monkeypatch, native, expected):
    monkeypatch.setattr(hardware, "native_cpu_bf16", lambda: native)
    cfg = tiny()
    assert cfg.trainer.precision == expected
    trainer = instantiate(cfg.trainer, logger=False)
    assert type(trainer.precision_plugin).__name__ == ("MixedPrecision" if native else "Precision")
    # an explicit choice still wins, and GPUs keep bf16 whatever the host CPU
    assert tiny("trainer.precision=16-mixed").trainer.precision == "16-mixed"
    assert tiny("trainer=gpu").trainer.precision == tiny("trainer=ddp").trainer.precision == "bf16-mixed"


def test_the_check_is_torchs_own():
    import torch

    assert hardware.native_cpu_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
