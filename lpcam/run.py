"""``python -m lpcam.run [overrides]``: the default job, or any Hydra composition of it."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from lpcam.errors import input_error_in
from lpcam.pipeline import run
from lpcam.report import print_summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        results = run(cfg)
    except Exception as err:
        cause = input_error_in(err)
        if cause is None:
            raise
        print(f"lpcam: error: {cause}", file=sys.stderr)  # the user's input, not a bug: no traceback
        sys.exit(1)
    print_summary(results)
    return results["methods"]["lpcam"]["best"]["miou"]  # the objective for sweepers


if __name__ == "__main__":
    main()
