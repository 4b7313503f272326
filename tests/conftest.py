"""Shared fixtures: composing the project's real Hydra config with test overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parents[1] / "lpcam" / "conf"

# the smallest run of the real pipeline that still has every stage: seconds on a laptop CPU
TINY = [
    "dataset.generator.num_train=64",
    "dataset.generator.num_eval=16",
    "dataset.generator.num_val=16",
    "dataset.generator.image_size=64",
    "dataset.generator.num_classes=2",  # few classes: a few epochs learn them all
    "dataset.batch_size=16",
    "dataset.eval_batch_size=16",
    "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
    "evaluation.scales=[1.0,0.5]",
    "lpcam.k=3",
    "logger=csv",
]


def compose_config(overrides: list[str], config_dir: Path = CONF) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.fixture
def tiny(tmp_path: Path):
    """Returns a function: extra overrides -> composed tiny config writing under tmp_path."""
    os.environ.setdefault("WANDB_SILENT", "true")

    def make(*extra: str, run: str = "run") -> DictConfig:
        return compose_config(
            [*TINY, f"data_dir={tmp_path / 'data'}", f"cache.dir={tmp_path / 'cache'}", f"run_dir={tmp_path / run}", *extra]
        )

    return make
