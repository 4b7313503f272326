"""``python -m lpcam.run [overrides]``: the default job, or any Hydra composition of it."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lpcam.pipeline import run
from lpcam.report import print_summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    results = run(cfg)
    print_summary(results)
    return results["methods"]["lpcam"]["best"]["miou"]  # the objective for sweepers


if __name__ == "__main__":
    main()
