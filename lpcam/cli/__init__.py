"""Console commands besides ``lpcam`` (the Hydra entry point, :func:`lpcam.run.main`):
``lpcam-report`` (:mod:`lpcam.cli.sweep_report`) and ``lpcam-seed-study`` (:mod:`lpcam.cli.seed_study`)."""
