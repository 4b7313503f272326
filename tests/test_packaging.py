"""Packaging: pyproject.toml's console commands, package data and dependencies against the code and
requirements.txt, and a wheel built offline from the checkout. No network and no new venv."""

import ast
import glob
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _pins() -> dict[str, str]:
    """requirements.txt as {normalised name: exact version}."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.txt pins exact versions: {line}"
            pins[_norm(req.name)] = spec.version
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(group: str | None) -> list[Requirement]:
    specs = PROJECT["dependencies"] if group is None else PROJECT["optional-dependencies"][group]
    return [Requirement(s) for s in specs]


def test_metadata_version_and_python():
    import lpcam

    assert PROJECT["name"] == "lpcam" and PROJECT["requires-python"] == ">=3.11"
    assert "version" in PROJECT["dynamic"] and SETUPTOOLS["dynamic"]["version"] == {"attr": "lpcam.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", lpcam.__version__)


def test_every_console_command_resolves_to_a_callable():
    scripts = PROJECT["scripts"]
    assert {"lpcam", "lpcam-report"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        func = getattr(importlib.import_module(module), attr)
        assert callable(func), name
    from lpcam.run import main

    assert scripts["lpcam"] == "lpcam.run:main" and main.__wrapped__.__name__ == "main"  # the Hydra entry point


def test_the_hydra_entry_point_finds_its_configs_however_it_is_called():
    # a console script calls main() from module "lpcam.run", where a relative config_path would become
    # pkg://lpcam.conf (not a package); the absolute path works the same from any directory
    from lpcam.run import CONFIG_DIR

    assert Path(CONFIG_DIR).is_absolute() and (Path(CONFIG_DIR) / "config.yaml").is_file()
    assert Path(CONFIG_DIR) == ROOT / "lpcam" / "conf"


def test_lpcam_report_command(tmp_path, capsys):
    from lpcam.cli.sweep_report import main

    with pytest.raises(SystemExit, match="lpcam-report: .*no job folder"):
        main([str(tmp_path)])
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- lpcam.k=0\n")
    (job / "error.json").write_text(json.dumps({"error": "lpcam.k=0: expected a whole number >= 1", "input_error": True}))
    main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert "0 of 1 jobs finished" in out and "1 failed job(s) listed" in out
    assert "## Failed jobs" in (tmp_path / "report" / "report.md").read_text()


def test_package_data_covers_every_config_file_and_find_covers_every_subpackage():
    from setuptools import find_packages

    patterns = SETUPTOOLS["package-data"]["lpcam"]
    shipped = {Path(p) for pat in patterns for p in glob.glob(str(ROOT / "lpcam" / pat), recursive=True)}
    configs = {p for p in (ROOT / "lpcam" / "conf").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert len(configs) > 30 and configs <= shipped, sorted(map(str, configs - shipped))
    found = set(find_packages(str(ROOT), **SETUPTOOLS["packages"]["find"]))
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lpcam").rglob("__init__.py")}
    assert found == packages and {"lpcam.cli", "lpcam.models"} <= found


def test_dependencies_agree_with_the_pins_and_cover_what_the_code_imports():
    pins = _pins()
    declared = {}
    for group in [None, *PROJECT["optional-dependencies"]]:
        for req in _requirements(group):
            if req.name == "lpcam":  # dev pulls in the other extras
                assert req.extras <= set(PROJECT["optional-dependencies"])
                continue
            declared[_norm(req.name)] = group
            if _norm(req.name) in pins:  # every pinned version satisfies the declared bound
                assert req.specifier.contains(pins[_norm(req.name)]), (req, pins[_norm(req.name)])
            else:
                assert group == "crf", f"{req.name} is not pinned in requirements.txt"
    assert set(pins) <= set(declared), set(pins) - set(declared)  # every pin is declared somewhere
    core = {n for n, g in declared.items() if g is None}
    # what the default job imports at module level is core, not an extra
    assert {"torch", "pytorch-lightning", "hydra-core", "wandb", "grad-cam", "matplotlib", "filelock", "pyyaml"} <= core
    assert (declared["timm"], declared["pycocotools"], declared["hydra-joblib-launcher"]) == ("timm", "coco", "sweeps")


def test_extras_are_imported_lazily_by_the_default_job():
    code = """
import sys
import lpcam.run, lpcam.pipeline, lpcam.data.coco, lpcam.data.digits, lpcam.sweeps
bad = [m for m in ("timm", "pycocotools", "pydensecrf", "hydra_plugins.hydra_joblib_launcher", "optuna", "submitit") if m in sys.modules]
print(bad)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_experiments_import_the_package_without_sys_path_edits():
    scripts = sorted((ROOT / "experiments").glob("*.py"))
    assert scripts
    for script in scripts:
        source = script.read_text()
        assert "sys.path" not in source and "PYTHONPATH" not in source, script.name
        imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
        assert any(m and m.startswith("lpcam") for m in imported), script.name


def test_makefile_installs_the_pins_then_the_package():
    make = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(VENV\)/\.installed:(.*)$", make, re.M)
    assert stamp and {"requirements.txt", "pyproject.toml"} <= set(stamp.group(1).split())
    recipe = make[stamp.end() :].split("\n\n", 1)[0]
    assert recipe.index("-r requirements.txt") < recipe.index("--no-deps -e .")
    assert re.search(r"^run:.*\n\t\$\(VENV\)/bin/lpcam \$\(ARGS\)$", make, re.M)
    assert re.search(r"^test:.*\n\t\$\(PY\) -m pytest -q tests$", make, re.M)


def test_a_wheel_built_offline_ships_the_configs_and_the_commands(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "lpcam", src / "lpcam", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("lpcam-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    configs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lpcam" / "conf").rglob("*.yaml")}
    assert configs <= names, sorted(configs - names)
    assert "lpcam/cli/sweep_report.py" in names and "lpcam/models/backbones.py" in names
    assert not any(n.startswith(("tests/", "experiments/")) for n in names)
    assert "lpcam = lpcam.run:main" in entry_points and "lpcam-report = lpcam.cli.sweep_report:main" in entry_points
