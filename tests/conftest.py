"""Shared fixtures: composing the project's real Hydra config with test overrides."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import lpcam.config_schemas  # noqa: F401  (registers the groups' schemas that the yaml files name)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

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


@pytest.fixture(autouse=True, scope="session")
def loopback_only():
    """No test reaches the network: a connection to anything but this machine fails at once (the
    download tests serve their files from 127.0.0.1). Subprocesses are not covered; they run the
    pipeline on generated data, which downloads nothing."""
    import ipaddress
    import socket

    real = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                local = ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = host == "localhost"
            if not local:
                raise OSError(f"tests may not reach the network (connect to {address!r})")
        return real(self, address)

    socket.socket.connect = connect
    yield
    socket.socket.connect = real


def experiment_script(name: str) -> Iterator[ModuleType]:
    """``experiments/<name>.py`` imported as a module, for a fixture to yield: the scripts are
    not a package (they run as ``python experiments/<name>.py``), and registering the module in
    ``sys.modules`` while it is used lets its dataclasses resolve their own annotations."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


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


# the tiny job of the interruption tests (lpcam/stages/resume.py): 5 epochs of 4 steps, so a
# training can be stopped mid-epoch four times, and the prototype build's 16 images in 2 batches,
# so that it can be stopped after its first; run as the command a user runs
RESUMABLE = [*TINY, "trainer.max_epochs=5", "dataset.eval_batch_size=8", "logger=none"]


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory) -> dict:
    """The RESUMABLE job run once without interruption: its results.json, and the run and cache
    folders, for the interruption tests to compare with."""
    import json
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("uninterrupted")
    overrides = [*RESUMABLE, f"data_dir={root / 'data'}", f"cache.dir={root / 'cache'}", f"hydra.run.dir={root / 'run'}"]
    env = {**os.environ, "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "lpcam.run", *overrides], cwd=CONF.parents[1], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"results": json.loads((root / "run" / "results.json").read_text()), "run": root / "run", "cache": root / "cache"}
