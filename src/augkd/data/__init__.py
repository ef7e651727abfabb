"""Datasets as uint8 tensors in memory, and batches served from them.

- :mod:`augkd.data.config`: :class:`DataConfig`, the ``data`` section of a run's config.
- :mod:`augkd.data.archive`: zip archives unzipped once into the cache.
- :mod:`augkd.data.folder`: ImageFolder scanning (``<root>/<split>/<class>/<image>``).
- :mod:`augkd.data.decode`: decoding files into one tensor (worker processes, resize rule, bad files).
- :mod:`augkd.data.cache`: the on-disk tensor cache keyed by the source's content.
- :mod:`augkd.data.memory`: :class:`InMemoryDataset`, stable sample ids, stratified subsets.
- :mod:`augkd.data.cifar`: CIFAR-10/100 in torchvision's formats.
- :mod:`augkd.data.loader`: :class:`DeviceLoader` and :class:`Batch`.
- :mod:`augkd.data.stream`: :class:`StreamLoader`, JPEGs decoded per batch by DataLoader workers (ImageNet-sized).
- :mod:`augkd.data.build`: :func:`build_datasets` (dataset kinds by name), :func:`dataset_stats`,
  :func:`describe_dataset`.
- :mod:`augkd.data.pipeline`: :class:`BatchPipeline`, the stages and normalization of a run's training batches.

Example:
    >>> from augkd.data import DataConfig, DeviceLoader, build_datasets
    >>> train, test = build_datasets(DataConfig(root="../shared/data/cifar10-jpg.zip"))  # doctest: +SKIP
    >>> loader = DeviceLoader(train, batch_size=512, shuffle=True, drop_last=True, seed=0)  # doctest: +SKIP
"""

from augkd.data.build import NORMALIZATION, build_datasets, dataset_stats, describe_dataset
from augkd.data.config import DataConfig
from augkd.data.loader import Batch, DeviceLoader, epoch_permutation
from augkd.data.memory import InMemoryDataset, load_folder_split, stratified_positions, subset_per_class
from augkd.data.stream import StreamDataset, StreamLoader, build_stream_eval_loader, build_stream_loaders

__all__ = [
    "NORMALIZATION",
    "Batch",
    "DataConfig",
    "DeviceLoader",
    "InMemoryDataset",
    "StreamDataset",
    "StreamLoader",
    "build_datasets",
    "build_stream_eval_loader",
    "build_stream_loaders",
    "dataset_stats",
    "describe_dataset",
    "epoch_permutation",
    "load_folder_split",
    "stratified_positions",
    "subset_per_class",
]
