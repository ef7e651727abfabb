"""Benchmarks against the anchors, side by side in one process; each returns a JSON-ready dict.

- :mod:`augkd.bench.augment`: augmentation policies against torchvision, timm and kornia.
- :mod:`augkd.bench.data`: the in-memory loader + base augmentation against torchvision's per-image pipeline.
"""
