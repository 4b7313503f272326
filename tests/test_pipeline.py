"""The whole pipeline on a tiny generated dataset, through the project's own Hydra config."""

import json

import pytest
import torch

from lpcam.pipeline import run
from lpcam.prototypes.store import IncompatiblePrototypes, Prototypes
from tests.wandb_records import read_run

CONTRACT_METRICS = {"threshold", "miou", "fp", "fn", "precision", "recall"}


def test_default_job_shape_end_to_end_and_reproducible(tiny, tmp_path):
    results = run(tiny(run="a"))
    run_dir = tmp_path / "a"
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    # the results.json contract (docs/results-json.md)
    assert on_disk["schema"] == 2 and on_disk["dataset"] == "synthetic_parts" and on_disk["split"] == "train"
    assert on_disk["backbone"] == "small_resnet" and on_disk["seed"] == 0
    assert list(on_disk["methods"]) == ["cam", "lpcam_official", "lpcam_fg_only", "lpcam_max"]
    assert on_disk["evaluation"] == {"scales": [1.0, 0.5], "flip": True, "rescale": "pil_bicubic", "upsample": "padded",
                                     "default_threshold": 0.15}  # TINY's scales; what the figures depend on
    for method in on_disk["methods"]:
        r = on_disk["methods"][method]
        assert set(r["best"]) == CONTRACT_METRICS and set(r["default"]) == CONTRACT_METRICS
        assert r["default"]["threshold"] == 0.15
        assert set(r["per_class_iou"]) == {"background", "fox", "wolf"}
        assert set(r["part_recall"]) == {"discriminative", "shared"}
        assert len(r["curve"]) == 20
        assert 0 <= r["best"]["miou"] <= 100
        assert r["best"]["miou"] == max(p["miou"] for p in r["curve"])
    assert on_disk["primary_method"] == "lpcam_official" and on_disk["aggregation"] == "official"
    assert set(on_disk["prototypes"]["settings"]) >= {"k", "tau", "mu_fg", "mu_bg", "score"}
    assert on_disk["prototypes"]["settings"]["k"] == 3 and set(on_disk["prototypes"]["counts"]) == {"fox", "wolf"}
    assert on_disk["provenance"]["classifier"]["source"] == "trained"
    assert on_disk["provenance"]["prototypes"]["source"] == "built"
    assert set(on_disk["timings_s"]) == {"train", "features", "clustering", "extraction", "evaluation"}
    assert on_disk["timings_s"]["train"] > 0 and on_disk["peak_memory_mb"] > 0
    assert (run_dir / "cams.png").stat().st_size > 10_000
    # prototypes: in the run directory and in the best checkpoint, with what built them
    protos = Prototypes.load(run_dir / "prototypes.pt")
    assert protos.meta["k"] == 3 and protos.meta["backbone"] == "small_resnet"
    assert all(1 <= len(p) <= 3 for p in protos.class_protos)
    ckpt = torch.load(run_dir / "checkpoints/best.ckpt", weights_only=False)
    assert "lpcam_prototypes" in ckpt
    # the same seed gives the same prototypes and the same numbers (trained again, not cached)
    again = run(tiny("cache.classifier=false", "cache.features=false", run="b"))
    assert again["timings_s"]["train"] > 0
    protos_b = Prototypes.load(tmp_path / "b" / "prototypes.pt")
    for x, y in zip(protos.class_protos + protos.context_protos, protos_b.class_protos + protos_b.context_protos):
        assert torch.equal(x, y)
    for method in results["methods"]:
        assert again["methods"][method]["curve"] == results["methods"][method]["curve"]


def test_checkpoint_and_prototypes_reuse_and_refusal(tiny, tmp_path):
    first = run(tiny(run="train"))
    ckpt, protos = tmp_path / "train/checkpoints/best.ckpt", tmp_path / "train/prototypes.pt"
    # evaluate again from the checkpoint and the saved prototypes: no training, same numbers
    reused = run(tiny(f"ckpt_path={ckpt}", f"lpcam.prototypes_path={protos}", run="reuse"))
    assert reused["timings_s"]["train"] == 0
    assert reused["methods"]["lpcam_official"]["curve"] == first["methods"]["lpcam_official"]["curve"]
    assert reused["provenance"]["classifier"] == {"source": "checkpoint", "path": str(ckpt), "seconds": {}}
    assert reused["provenance"]["prototypes"]["source"] == "file"
    # changing an LPCAM setting rebuilds the prototypes from the checkpoint, without training
    k2 = run(tiny(f"ckpt_path={ckpt}", "lpcam.k=2", run="k2"))
    assert k2["timings_s"]["train"] == 0 and k2["timings_s"]["clustering"] > 0
    assert all(1 <= c["class"] <= 2 for c in k2["prototypes"]["counts"].values())
    assert k2["provenance"]["prototypes"]["source"] == "built"
    assert reused["methods"]["cam"]["curve"] == k2["methods"]["cam"]["curve"]  # same classifier
    # prototypes of another class set are refused, naming the field
    with pytest.raises(IncompatiblePrototypes, match="class_names"):
        run(tiny("dataset.generator.num_classes=4", f"lpcam.prototypes_path={protos}", run="bad"))
    assert not (tmp_path / "bad" / "checkpoints").exists()  # refused before any training


def test_wandb_logger_runs_offline(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    import wandb

    run(tiny("logger=wandb", run="wb"))
    wandb.teardown()  # W&B's service may still be writing the runs after finish(); this waits for it
    offline = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    runs = {r.job_type: r for r in map(read_run, offline)}  # the run's data, ready for `wandb sync`
    assert set(runs) == {"train", "evaluate"} and len(offline) == 2  # one run per stage
    assert all(r.exit_code == 0 for r in runs.values())
    assert ("prototypes-synthetic_parts-small_resnet", "prototypes") in runs["evaluate"].artifacts


def test_command_line_reports_bad_input_without_traceback(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "lpcam.run", "dataset=voc", f"data_dir={tmp_path}", "logger=none",
         f"hydra.run.dir={tmp_path / 'run'}"],  # fmt: skip
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "lpcam: error:" in proc.stderr and "JPEGImages/<id>.jpg" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_and_evaluate_as_separate_stages_share_the_cached_classifier(tiny, tmp_path):
    from lpcam.errors import MissingInput

    with pytest.raises(MissingInput, match="stage=evaluate: no classifier trained with this config"):
        run(tiny("stage=evaluate", run="too_early"))
    assert run(tiny("stage=train", run="train")) is None
    assert (tmp_path / "train" / "prototypes.pt").is_file() and not (tmp_path / "train" / "results.json").exists()
    (entry,) = [p for p in (tmp_path / "cache" / "classifiers").iterdir() if p.is_dir()]
    assert (entry / "best.ckpt").is_file() and "num_train: 64" in (entry / "training_config.yaml").read_text()
    evaluated = run(tiny("stage=evaluate", run="eval"))
    assert evaluated["timings_s"]["train"] == 0 and evaluated["timings_s"]["features"] == 0  # carried prototypes
    # an LPCAM setting is not part of the classifier's key: reused; a training setting is
    k4 = run(tiny("stage=evaluate", "lpcam.k=4", run="k4"))
    assert k4["timings_s"]["train"] == 0 and k4["prototypes"]["settings"]["k"] == 4
    assert evaluated["provenance"]["classifier"]["source"] == "cache"
    assert evaluated["provenance"]["prototypes"]["source"] == "checkpoint"  # carried by the cached checkpoint
    assert k4["methods"]["cam"]["curve"] == evaluated["methods"]["cam"]["curve"]
    with pytest.raises(MissingInput):
        run(tiny("stage=evaluate", "trainer.max_epochs=3", run="other"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("lpcam.k=0", "lpcam.k=0: expected a whole number"),
        ("lpcam.tau=1.5", "lpcam.tau=1.5: expected a CAM threshold in"),
        ("lpcam.context_min=0.95", "lpcam.context_min=0.95: expected a score in"),
        ("lpcam.score=logit", "lpcam.score='logit'"),
        ("stage=deploy", "stage='deploy': expected one of all, train, evaluate, export, score"),
        ("export.formats=[jpeg]", r"export.formats=\(.jpeg.,\): expected formats among"),
        ("lpcam.kmeans_metric=manhattan", "lpcam.kmeans_metric='manhattan': expected cosine or euclidean"),
        ("evaluation.default_threshold=0.33", "evaluation.default_threshold=0.33: expected one of the thresholds"),
        ("evaluation.scales=[]", r"evaluation.scales=\(\): expected a non-empty list"),
        ("evaluation.compare_rules=[median]", r"evaluation.compare_rules=\('median',\): expected rules among"),
        ("evaluation.baselines=[gradcam+++]", "evaluation.baselines=.*expected methods among"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tiny, tmp_path, override, message):
    from lpcam.errors import InputError

    with pytest.raises(InputError, match=message):
        run(tiny(override, run="bad"))
    assert not (tmp_path / "data").exists()  # refused before generating or training anything
