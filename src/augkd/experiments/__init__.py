"""Experiments on top of training: sweeps, analyses, galleries, reports and plots.

- :mod:`augkd.experiments.sweep`: :func:`~augkd.experiments.sweep.run_sweep`, grids of runs (``augkd sweep``).
- :mod:`augkd.experiments.report`: :func:`~augkd.experiments.report.make_report`, tables and plots over runs.
- :mod:`augkd.experiments.ambiguity`: a teacher's confidence per op and level (``augkd ambiguity``).
- :mod:`augkd.experiments.gallery`: :func:`~augkd.experiments.gallery.make_gallery`, ops across levels (Fig. 3).
"""
