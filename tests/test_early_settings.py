"""Every ``evaluation.*``, ``export.*`` (and ``lpcam.*``) setting is checked before any data is
generated or any training starts, in one line naming the field."""

from __future__ import annotations

import json

import pytest

from lpcam.errors import InputError
from lpcam.export.formats import crf_available
from lpcam.pipeline import run


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["evaluation.default_threshold=0.33"], "evaluation.default_threshold=0.33: expected one of the thresholds"),
        (["evaluation.scales=[]"], r"evaluation.scales=\(\): expected a non-empty list"),
        (["evaluation.compare_rules=[median]"], r"evaluation.compare_rules=\('median',\): expected rules among"),
        (["evaluation.compare_rules=max"], "evaluation.compare_rules='max': expected a list of strings"),
        (["evaluation.scales=1.0"], "evaluation.scales=1.0: expected a list of numbers"),
        (["evaluation.scales=[a]"], r"evaluation.scales=\['a'\]: expected a list of numbers"),
        (["evaluation.flip=maybe"], "evaluation.flip='maybe': expected true or false"),
        (["evaluation.default_threshold=abc"], "evaluation.default_threshold='abc': expected a number"),
        (["evaluation.num_examples=two"], "evaluation.num_examples='two': expected a whole number"),
        (["export.method=lpcam_median"], r"export.method='lpcam_median': expected one of this run's methods \['cam', "),
        (["export.fg_threshold=abc"], "export.fg_threshold='abc': expected a number"),
        (["export.crf=maybe"], "export.crf='maybe': expected true or false"),
        (["export.crf=null"], "export.crf=None: expected true or false"),
        (["export.formats=irn"], "export.formats='irn': expected a list of strings"),
        (["export.bg_threshold=0.5"], r"export.bg_threshold=0.5: expected a threshold in \(0, export.fg_threshold\]"),
        (["lpcam.tau=high"], "lpcam.tau='high': expected a number"),
        (["lpcam.keep_best=sometimes"], "lpcam.keep_best='sometimes': expected true or false"),
    ],
)
def test_a_bad_setting_is_refused_before_any_data_or_training(tiny, tmp_path, overrides, message):
    with pytest.raises(InputError, match=message) as err:
        run(tiny(*overrides, run="bad"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data").exists() and not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.skipif(crf_available(), reason="pydensecrf is installed here")
def test_a_crf_export_without_pydensecrf_is_refused_before_any_work(tiny, tmp_path):
    with pytest.raises(InputError, match=r"export.crf=True: expected false: the dense CRF needs pydensecrf, which is not installed \(pip install 'lpcam\[crf\]'\)"):
        run(tiny("export.formats=[ir_label]", "export.crf=true", f"export.dir={tmp_path / 'out'}", run="bad"))
    assert not (tmp_path / "data").exists()


def test_export_method_of_a_baseline_is_accepted_and_method_factories_defer_the_check(tiny):
    from hydra.utils import instantiate

    from lpcam.cams.aggregation import official
    from lpcam.pipeline import build_settings, check_export_method
    from lpcam.stages.evaluation import EvaluationSettings, planned_methods

    cfg = tiny("method=gradcam", "export.method=gradcam")
    check_export_method(build_settings(cfg.export), instantiate(cfg.lpcam.aggregation), build_settings(cfg.evaluation))
    assert planned_methods(official, EvaluationSettings(compare_rules=["max"])) == ["cam", "lpcam_official", "lpcam_max"]
    assert planned_methods(official, EvaluationSettings(methods=[lambda **kw: None])) is None  # names known once built


def test_export_split_and_folder_are_checked_before_training(tiny, tmp_path):
    """These need the dataset (generated first), but not the classifier: refused before training."""
    with pytest.raises(InputError, match=r"export.split=test: .*test.txt: split file not found"):
        run(tiny(f"export.dir={tmp_path / 'out'}", "export.split=test", run="split"))
    assert not (tmp_path / "split" / "checkpoints").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "export.json").write_text(json.dumps(
        {"schema": 2, "dataset": "synthetic_parts", "split": "train_aug", "method": "cam", "formats": ["irn"]}
    ))
    with pytest.raises(InputError, match=r"export.dir=.*out: it holds an export with method='cam', this run has method='lpcam_official'"):
        run(tiny(f"export.dir={tmp_path / 'out'}", run="folder"))
    assert not (tmp_path / "folder" / "checkpoints").exists()
    # an export of an earlier lpcam, every format in one folder: refused (stage=score still reads it)
    (tmp_path / "out" / "export.json").write_text(json.dumps(
        {"schema": 1, "dataset": "synthetic_parts", "split": "train_aug", "method": "lpcam_official", "formats": ["irn"]}
    ))
    with pytest.raises(InputError, match=r"export.dir=.*out: written by an earlier lpcam, with every format in this one folder"):
        run(tiny(f"export.dir={tmp_path / 'out'}", run="old"))
