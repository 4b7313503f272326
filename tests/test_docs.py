"""The documentation site builds without a broken link, and its configuration page is the config tree's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lpcam.cli.config_reference import default_config, leaves, reference
from tests.conftest import ROOT, experiment_script


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


@pytest.fixture
def official_protocol_script():
    yield from experiment_script("official_protocol")


def test_the_official_protocol_table_is_the_one_its_record_gives(official_protocol_script):
    """docs/studies/official-protocol.md's decomposition table is printed from the record file,
    never edited by hand: a run added to the record without remaking the page fails here."""
    page = (ROOT / "docs" / "studies" / "official-protocol.md").read_text().splitlines()
    start = next(i for i, line in enumerate(page) if line.startswith("<!-- the table below is printed by:"))
    shown = []
    for line in page[start + 1 :]:
        if line.startswith("|"):
            shown.append(line)
        elif shown:
            break
    record = json.loads((ROOT / "docs" / "official_protocol_runs.json").read_text())
    assert "\n".join(shown) == official_protocol_script.table(record), "remake it: python experiments/official_protocol.py --record docs/official_protocol_runs.json"
