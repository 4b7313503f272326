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
    assert Path(CONFIG_DIR) == ROOT / "conf"  # a checkout reads the top-level tree in place


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


def test_find_covers_every_subpackage_and_the_search_path_plugin():
    from setuptools import find_namespace_packages

    found = set(find_namespace_packages(str(ROOT), include=SETUPTOOLS["packages"]["find"]["include"]))
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lpcam").rglob("__init__.py")}
    assert packages <= found and {"lpcam.cli", "lpcam.models", "hydra_plugins.lpcam_searchpath"} <= found
    assert not (ROOT / "hydra_plugins" / "__init__.py").exists()  # a namespace shared with Hydra's other plugins
    assert len(list((ROOT / "conf").rglob("*.yaml"))) > 30 and not (ROOT / "lpcam" / "conf").exists()


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


def build_wheel(tmp_path: Path) -> Path:
    """A wheel of the checkout, built offline (no index, no build isolation)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "setup.py", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("lpcam", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("lpcam-*.whl")
    return wheel


def test_a_wheel_built_offline_ships_the_configs_and_the_commands(tmp_path):
    pytest.importorskip("setuptools")
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    configs = {"lpcam/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert configs <= names, sorted(configs - names)  # conf/ travels inside the package
    assert "lpcam/cli/sweep_report.py" in names and "lpcam/models/backbones.py" in names
    assert "hydra_plugins/lpcam_searchpath/lpcam_searchpath.py" in names
    assert not any(n.startswith(("tests/", "experiments/", "conf/", "docs/")) for n in names)
    assert "lpcam = lpcam.run:main" in entry_points and "lpcam-report = lpcam.cli.sweep_report:main" in entry_points


def test_the_wheel_installed_in_a_fresh_venv_runs_from_an_empty_folder_and_finds_its_configs(tmp_path):
    """Installed as a user installs it (here offline, its dependencies taken from this environment),
    `lpcam --help` lists every group from an empty folder, and a conf/ folder there is searched
    first: conf/backbone/my_net.yaml makes backbone=my_net work with no other flag."""
    import site
    import venv

    wheel = build_wheel(tmp_path)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    own = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True)
    Path(own.stdout.strip(), "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # torch & co., not lpcam
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    lpcam = [str(env_dir / "bin" / "lpcam")]
    where = subprocess.run([python, "-c", "import lpcam.run as r; print(r.__file__, r.CONFIG_DIR)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert str(env_dir) in where and where.split()[1].endswith("lpcam/conf")  # the wheel's copy, not the checkout
    out = subprocess.run([*lpcam, "--help"], cwd=empty, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    groups = {p.parent.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml") if p.parent != ROOT / "conf"}
    listed = {line.split(":", 1)[0] for line in out.stdout.splitlines() if ": " in line}
    assert groups - {"hydra/launcher", "hydra/sweeper"} <= listed, groups - listed
    (empty / "conf" / "backbone").mkdir(parents=True)
    (empty / "conf" / "backbone" / "my_net.yaml").write_text("_target_: lpcam.models.backbones.small_resnet\nwidths: [8, 16, 24]\n")
    job = subprocess.run([*lpcam, "backbone=my_net", "--cfg", "job"], cwd=empty, env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr[-2000:]
    assert "widths:\n  - 8\n  - 16\n  - 24" in job.stdout
