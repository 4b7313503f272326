"""``lpcam [overrides]`` or ``python -m lpcam.run [overrides]``: the default job, or any Hydra
composition of it. :func:`main` is the ``lpcam`` console command (pyproject.toml)."""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lpcam import console, preemption
from lpcam.config_dirs import config_dir
from lpcam.errors import input_error_in
from lpcam.loggers import wandb_written
from lpcam.pipeline import hydra_overrides, run
from lpcam.report import print_summary
from lpcam.results import write_json

log = logging.getLogger("lpcam.run")

# The config tree (lpcam.config_dirs), as an absolute path: Hydra reads it from the file system however
# main() is called. (A relative "conf" would become the module path pkg://lpcam.conf when main() runs
# as a console script, which Hydra only finds in a package with an __init__.py.)
CONFIG_DIR = str(config_dir())


def record_failure(run_dir: Path, err: BaseException, to_log: bool) -> None:
    """``error.json`` in the job's directory (the sweep report lists it) and, ``to_log``, the
    error in the job's log, so a failed job of a multirun says why wherever one looks."""
    cause = input_error_in(err)
    if to_log:
        expected = cause is not None or isinstance(err, preemption.Preempted)  # no traceback: not a bug
        log.error("job failed: %s", cause or err, exc_info=not expected)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        {
            "error": str(cause or err),
            "type": type(cause or err).__name__,
            "input_error": cause is not None,
            "overrides": hydra_overrides(),
            "traceback": "".join(traceback.format_exception(err)),
        },
        run_dir / "error.json",
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    console.quiet(verbose=bool(HydraConfig.get().verbose))  # third-party chatter to run.log only
    try:
        with preemption.stop_on_signals(), wandb_written():
            results = run(cfg)
    except SIGTERMException as err:  # a SystemExit that would exit 0: a scheduler must see a failure
        signum = preemption.received() or signal.SIGTERM  # Lightning raises it for SIGTERM, lpcam for SIGUSR1 too
        stop = err if isinstance(err, preemption.Preempted) else preemption.Preempted(signum).with_traceback(err.__traceback__)
        record_failure(Path(cfg.run_dir), stop, to_log=True)
        name = signal.Signals(signum).name
        print(f"lpcam: stopped by {name}; what was written is complete, and the same command resumes", file=sys.stderr)
        sys.exit(128 + signum)
    except Exception as err:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        record_failure(Path(cfg.run_dir), err, to_log=multirun)
        if multirun:
            raise  # Hydra marks this job failed, runs the others, and reports it when the sweep ends
        cause = input_error_in(err)
        if cause is None:
            raise
        print(f"lpcam: error: {cause}", file=sys.stderr)  # the user's input, not a bug: no traceback
        sys.exit(1)
    if results is None:  # stage=train
        return None
    print_summary(results)
    return results["methods"][results["primary_method"]]["best"]["miou"]  # the objective for sweepers


if __name__ == "__main__":
    main()
