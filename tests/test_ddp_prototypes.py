"""Prototypes under torch.distributed: each process samples its shard, the pools are merged."""

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from lpcam.models.backbones import small_resnet
from lpcam.models.classifier import Classifier
from lpcam.prototypes.pool import FeaturePool, merge_pools
from lpcam.prototypes.settings import PrototypeSettings
from lpcam.stages.prototypes import build_prototypes

SETTINGS = PrototypeSettings(k=3, tau=0.2)


def _data() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(16):
        label = torch.zeros(3)
        label[i % 3] = 1
        label[(i + 1) % 3] = float(i % 2)
        mask = torch.zeros(32, 32, dtype=torch.long)
        mask[8:24, 8:24] = i % 3 + 1
        items.append({"image": torch.rand(3, 32, 32, generator=g), "label": label, "mask": mask, "parts": torch.zeros_like(mask), "index": i})
    return items


def _model(path) -> Classifier:
    torch.manual_seed(0)
    model = Classifier(small_resnet(widths=(8, 16, 16)), num_classes=3)
    if path is not None:
        model.load_state_dict(torch.load(path))
    return model.eval()


def _build_in_process(rank: int, size: int, init: str, weights: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    try:
        protos, _ = build_prototypes(_model(weights), DataLoader(_data(), batch_size=4), ["a", "b", "c"], SETTINGS, progress=False)
        torch.save(protos.to_dict(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_build_the_prototypes_of_one(tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save(_model(None).state_dict(), weights)
    one, _ = build_prototypes(_model(weights), DataLoader(_data(), batch_size=4), ["a", "b", "c"], SETTINGS, progress=False)
    out = str(tmp_path / "protos")
    mp.spawn(_build_in_process, args=(2, f"file://{tmp_path / 'rendezvous'}", str(weights), out), nprocs=2, join=True)
    for rank in (0, 1):  # every process holds the same prototypes, those of one process
        got = torch.load(f"{out}.{rank}", weights_only=False)
        assert len(got["class_protos"]) == 3 and any(len(p) for p in got["class_protos"])
        for x, y in zip(got["class_protos"] + got["context_protos"], one.class_protos + one.context_protos):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def _pool(source: float, rows: int, cap: int, seed: int) -> dict:
    pool = FeaturePool(num_classes=1, dim=1, cap=cap, seed=seed)
    pool.fg[0].add(torch.full((rows, 1), source))
    pool.bg[0].add(torch.full((rows, 1), source))
    return pool.state_dict()


def test_merging_shards_keeps_a_uniform_sample_of_everything_seen():
    shares = []
    for seed in range(200):
        merged = merge_pools([_pool(0.0, 1000, 100, seed), _pool(1.0, 3000, 100, seed + 1000)], seed)
        rows = merged.fg[0].rows.flatten()
        assert len(rows) == 100 and merged.fg[0].seen == 4000
        shares.append(float((rows == 0).float().mean()))
    # shard 0 saw a quarter of the features: a quarter of the merged sample, on average
    assert abs(np.mean(shares) - 0.25) < 0.02 and np.std(shares) > 0.01


def test_shards_that_dropped_nothing_are_concatenated_in_order():
    a, b = _pool(0.0, 30, 100, 0), _pool(1.0, 50, 100, 1)
    merged = merge_pools([a, b])
    assert merged.fg[0].rows.flatten().tolist() == [0.0] * 30 + [1.0] * 50 and merged.bg[0].seen == 80


def test_the_whole_job_runs_under_ddp_with_two_processes(tmp_path):
    """Training, the prototype build (sharded, gathered), evaluation (confusions summed) with the
    classifier and feature caches on: no process waits on a lock another one of the job holds."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import TINY

    cmd = [
        sys.executable, "-m", "lpcam.run", *TINY, f"data_dir={tmp_path / 'data'}", f"cache.dir={tmp_path / 'cache'}",
        "trainer.devices=2", "trainer.strategy=ddp", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["provenance"]["prototypes"]["source"] == "built"
    assert all(0 < r["best"]["miou"] <= 100 for r in results["methods"].values())
    assert proc.stdout.count("lpcam_official") == 2  # both processes report the same, reduced numbers
    assert len(set(line for line in proc.stdout.splitlines() if line.startswith("lpcam_official"))) == 1
    assert len(list((tmp_path / "cache" / "classifiers").glob("*/best.ckpt"))) == 1


def test_two_processes_score_a_trained_classifier_exactly_as_one(tmp_path):
    """Given the same classifier, the prototype build (all features kept, so the merged pool is
    one process's) and the evaluation under DDP give one process's numbers to the last digit, on an
    evaluation split of odd size: no image is scored twice to even out the shards."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import TINY

    root = Path(__file__).resolve().parents[1]
    common = [*TINY, "dataset.generator.num_eval=15", "dataset.eval_batch_size=4", "logger=none",
              f"data_dir={tmp_path / 'data'}"]  # fmt: skip

    def run(name: str, *extra: str) -> Path:
        cmd = [sys.executable, "-m", "lpcam.run", *common, f"cache.dir={tmp_path / name / 'cache'}",
               f"hydra.run.dir={tmp_path / name}", *extra]  # fmt: skip
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return tmp_path / name

    (ckpt,) = (run("train", "stage=train") / "cache" / "classifiers").glob("*/best.ckpt")
    # lpcam.k=4, not TINY's 3: the checkpoint's prototypes are not reused, both runs build their own
    one, two = (
        json.loads((run(name, f"ckpt_path={ckpt}", "lpcam.k=4", *extra) / "results.json").read_text())
        for name, extra in (("one", ()), ("two", ("trainer.devices=2", "trainer.strategy=ddp")))
    )
    assert one["provenance"]["prototypes"]["source"] == two["provenance"]["prototypes"]["source"] == "built"
    assert one["methods"] == two["methods"]
