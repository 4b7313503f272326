"""What the terminal shows: lpcam's own lines, the progress bars and the final table.

Third-party chatter goes to the job's ``run.log`` only: Lightning's tips and device lines (its
INFO messages), the deprecation and user warnings that dependencies raise from their own code,
and W&B's banners and run summaries. Warnings and errors of any logger still reach the terminal.
``hydra.verbose=true`` shows everything, as before.

Why in code and not only in Hydra's logging config: Lightning gives its loggers their own stderr
handler at import time (before Hydra configures logging) and stops them from propagating, so
their lines never reach Hydra's handlers; W&B prints with its own terminal writer.
"""

from __future__ import annotations

import logging
import os

LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
OWN = ("lpcam", "__main__", "hydra")  # loggers whose INFO lines are the run's own


class ConsoleFilter(logging.Filter):
    """Lets through the run's own INFO lines and every other logger's warnings and errors, but
    not the warnings that dependencies raise from their own files (``py.warnings``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            return _from_lpcam(record.getMessage())
        if any(record.name == own or record.name.startswith(f"{own}.") for own in OWN):
            return True
        return record.levelno >= logging.WARNING


PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _from_lpcam(message: str) -> bool:
    """Whether a formatted warning (``<file>:<line>: <category>: <text>``) comes from lpcam's own code."""
    return message.startswith(PACKAGE + os.sep)


def quiet(verbose: bool = False) -> None:
    """Route third-party chatter to the log file (call it once Hydra has configured logging)."""
    for name in LIGHTNING_LOGGERS:  # their own stderr handler out; the root's handlers get them
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
    if verbose:
        return
    logging.captureWarnings(True)
    os.environ.setdefault("WANDB_SILENT", "true")  # W&B's banners and summaries: its files keep them
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            if not any(isinstance(f, ConsoleFilter) for f in handler.filters):
                handler.addFilter(ConsoleFilter())
