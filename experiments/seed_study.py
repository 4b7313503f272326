"""CAM vs LPCAM over seeds (docs/studies/seeds.md): the ``lpcam-seed-study`` command.

    python experiments/seed_study.py --seeds 0 1 2 --variant sigmoid='lpcam.score=sigmoid'

The code is :mod:`lpcam.cli.seed_study`; this file only runs it (``pip install -e .`` first, or ``make install``).
"""

from lpcam.cli.seed_study import main

if __name__ == "__main__":
    main()
