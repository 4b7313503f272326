"""The documentation site builds without a broken link, and its configuration page is the config tree's."""

from __future__ import annotations

import os
import subprocess
import sys

from lpcam.cli.config_reference import default_config, leaves, reference
from tests.conftest import ROOT


def test_the_configuration_page_is_generated_from_the_config_tree():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == reference(), "docs/configuration.md is stale: run `make docs` (python -m lpcam.cli.config_reference)"


def test_every_key_of_the_composed_config_has_its_entry_with_a_meaning():
    page = reference()
    rows = {line.split(" | ")[0].strip("| `"): line for line in page.splitlines() if line.startswith("| `")}
    missing = [key for key, _ in leaves(default_config()) if not key.startswith("hydra.") and key not in rows]
    assert not missing, missing
    unexplained = [key for key, row in rows.items() if "." in key or key in ("seed", "stage") if row.rstrip().endswith("|  |")]
    assert not unexplained, unexplained


def test_the_site_builds_strictly(tmp_path):
    """mkdocs-material is pinned in requirements.txt: a missing page, link or anchor fails the suite."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "studies" / "official-protocol" / "index.html").is_file()
