"""Experiments on top of training: sweeps, analyses, galleries, reports and plots.

- :mod:`augkd.experiments.gallery`: :func:`~augkd.experiments.gallery.make_gallery`, ops across levels (Fig. 3).
"""
