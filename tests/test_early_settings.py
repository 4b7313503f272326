"""Every ``evaluation.*``, ``export.*`` (and ``lpcam.*``) setting is checked before any data is
generated or any training starts: its type and name by the group's schema when Hydra composes the
config, its range by the settings object in one line naming the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from lpcam.errors import InputError
from lpcam.export.formats import crf_available
from lpcam.pipeline import run


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["evaluation.default_threshold=0.33"], "evaluation.default_threshold=0.33: expected one of the thresholds"),
        (["evaluation.scales=[]"], r"evaluation.scales=\(\): expected a non-empty list"),
        (["evaluation.compare_rules=[median]"], r"evaluation.compare_rules=\('median',\): expected rules among"),
        (["export.method=lpcam_median"], r"export.method='lpcam_median': expected one of this run's methods \['cam', "),
        (["export.bg_threshold=0.5"], r"export.bg_threshold=0.5: expected a threshold in \(0, export.fg_threshold\]"),
        (["lpcam.tau=1.5"], r"lpcam.tau=1.5: expected a CAM threshold in \(0, 1\)"),
        (["lpcam.kmeans_tol=-1"], "lpcam.kmeans_tol=-1.0: expected a tolerance ≥ 0"),
        (["+lpcam.kk=3"], r"lpcam.kk: not a setting of the lpcam group \(docs/configuration.md lists them\)"),
        (["+evaluation.flips=true"], "evaluation.flips: not a setting of the evaluation group"),
    ],
)
def test_a_bad_setting_is_refused_before_any_data_or_training(tiny, tmp_path, overrides, message):
    with pytest.raises(InputError, match=message) as err:
        run(tiny(*overrides, run="bad"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data").exists() and not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("evaluation.compare_rules=max", "str is not a ListConfig, list or tuple"),
        ("evaluation.scales=1.0", "float is not a ListConfig, list or tuple"),
        ("evaluation.scales=[a]", "Value 'a' of type 'str' could not be converted to Float"),
        ("evaluation.flip=maybe", "Value 'maybe' is not a valid bool"),
        ("evaluation.default_threshold=abc", "Value 'abc' of type 'str' could not be converted to Float"),
        ("evaluation.num_examples=two", "Value 'two' of type 'str' could not be converted to Integer"),
        ("export.fg_threshold=abc", "Value 'abc' of type 'str' could not be converted to Float"),
        ("export.crf=maybe", "Value 'maybe' is not a valid bool"),
        ("export.crf=null", "field 'export.crf' is not Optional"),
        ("export.formats=irn", "str is not a ListConfig, list or tuple"),
        ("lpcam.tau=high", "Value 'high' of type 'str' could not be converted to Float"),
        ("lpcam.k=2.5", "Value '2.5' of type 'float' could not be converted to Integer"),
        ("lpcam.keep_best=sometimes", "Value 'sometimes' is not a valid bool"),
        ("lpcam.split_flip=perhaps", "Value 'perhaps' is not a valid bool"),
        ("lpcam.kmeans_max_iter=many", "Value 'many' of type 'str' could not be converted to Integer"),
        ("lpcam.kk=3", "Key 'kk' not in 'PrototypeSettingsSchema'"),
    ],
)
def test_a_value_of_the_wrong_type_or_an_unknown_key_is_refused_when_the_config_is_composed(tiny, override, message):
    """The group's schema (the settings class's fields) types every key: Hydra names the key and
    the problem while composing, before the pipeline exists."""
    with pytest.raises(ConfigCompositionException) as err:
        tiny(override)
    text = f"{err.value} {err.value.__cause__}"
    assert override.lstrip("+").split("=")[0].removeprefix("lpcam.").removeprefix("evaluation.").removeprefix("export.") in text
    assert message in text


def test_the_command_line_names_a_mistyped_key_without_a_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lpcam.run", "lpcam.tau=high", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "lpcam.tau=high" in done.stderr and "could not be converted to Float" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


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
