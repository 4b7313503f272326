"""Report of a sweep directory: the ``lpcam-report`` command.

    python experiments/sweep_report.py multirun/<date> [--out DIR]

The code is :mod:`lpcam.cli.sweep_report`; this file only runs it (``pip install -e .`` first, or ``make install``).
"""

from lpcam.cli.sweep_report import main

if __name__ == "__main__":
    main()
