"""The teacher soft-label cache: the teacher's top-K view of every augmented image, computed once, read by index.

augkd's augmentation is a pure function of (seed, epoch, sample index), so the image a student sees at a given
epoch is known in advance, and so is the teacher's answer on it. ``augkd teacher-cache`` replays the training
augmentation and stores, per (epoch, sample index), a :class:`~augkd.distill.loss.TeacherTopK`:

- the teacher's top-K class indices (highest first) and their logits (temperature 1);
- ``logsumexp(z / T)`` over all classes at the cache's temperature T, and at T = 1;
- the entropy of the full softmax at T = 1 and the log-probability of the true label (``kd.weighting``).

What the fields serve, exactly:

- ``kd.mode=renorm`` needs only the top-K logits: any temperature, any ``kd.k <= K``.
- ``kd.mode=partial`` needs ``logsumexp(z / T)`` over *all* classes at the run's T, which the top-K logits and
  ``logsumexp(z)`` cannot give for T != 1. The cache holds it at its own T and at T = 1; a partial run at any
  other temperature is refused.
- ``kd.weighting=entropy|doubt`` use the two per-image floats.

On disk, ``DIR/``::

    header.json        format, the key (what decides the values: every pipeline stage's settings, seeds
                       included, dataset fingerprint, teacher sha256, autocast dtype), K, T, dtypes, layout,
                       provenance
    sample_ids.npy     int64 (N,): the sample id of each row (ascending)
    epoch_0000.bin     one raw file per epoch, three blocks (64-byte aligned), read with numpy.memmap:
                       indices (N, K) int16|int32, logits (N, K) float32|float16, stats (N, 4) float32
                       [lse at T, lse at 1, entropy, log p(label)]

Every file is written to a temporary name and renamed into place, so an epoch file exists exactly when it is
complete: an interrupted build keeps its finished epochs and redoes the partial one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from augkd.distill.loss import TeacherTopK
from augkd.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from augkd.data.memory import InMemoryDataset

__all__ = [
    "CACHE_FORMAT",
    "LOGITS_DTYPES",
    "CacheError",
    "CacheLayout",
    "TeacherCache",
    "cache_key",
    "dataset_fingerprint",
    "describe_dataset_for_cache",
    "epoch_path",
    "file_sha256",
    "finished_epochs",
    "prepare_cache_dir",
    "write_epoch",
]

CACHE_FORMAT = "augkd-teacher-cache/2"  # 2: the key is the training pipeline's own (stage by stage)
HEADER = "header.json"
SAMPLE_IDS = "sample_ids.npy"
#: Storage dtypes of the top-K logits (the four per-image statistics stay float32).
LOGITS_DTYPES = ("float32", "float16")
#: Columns of the per-image statistics block.
STATS = ("lse_t", "lse_1", "entropy", "log_p_label")
_ALIGN = 64

#: How a mismatch of a key entry is named to the user (``pipeline.*`` entries are named by their own path: the
#: stage and the setting, e.g. ``pipeline.stages.augment.policy.magnitude``).
KEY_NAMES: dict[str, str] = {
    "amp": "amp (autocast dtype of the teacher's forward pass)",
    "dataset": "training-set fingerprint",
    "teacher": "teacher checkpoint sha256",
}


class CacheError(ValueError):
    """A missing, damaged or mismatched teacher cache (one line naming the file or the key)."""


# ----------------------------------------------------------------------------------------------------------------
# Keys: what decides the cached values


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_fingerprint(dataset: InMemoryDataset) -> str:
    """Hex SHA-256 of a dataset's classes, sample ids, labels and image bytes (subsets differ by their ids)."""
    h = hashlib.sha256(json.dumps({"classes": list(dataset.classes)}).encode())
    for t in (dataset.sample_ids, dataset.labels, dataset.images):
        h.update(memoryview(t.contiguous().numpy()).cast("B"))
    return h.hexdigest()


def describe_dataset_for_cache(dataset: InMemoryDataset) -> dict[str, Any]:
    """The human side of the dataset key: name, split, size, subset (the fingerprint decides)."""
    return {
        "name": dataset.name,
        "split": dataset.split,
        "num_images": len(dataset),
        "split_size": dataset.split_size,
        "subset": dataset.subset,
        "num_classes": dataset.num_classes,
    }


def _flatten(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def cache_key(
    pipeline_key: Mapping[str, Any], dataset_sha: str, amp_dtype: torch.dtype | None, teacher_sha: str | None
) -> dict[str, Any]:
    """The key of a run's teacher outputs: everything that decides the augmented image and the teacher's answer.

    Args:
        pipeline_key: the training pipeline's own key (:meth:`augkd.data.pipeline.BatchPipeline.replay_key`):
            every stage reports what makes its output reproducible, so a new stage changes the key by itself.
        dataset_sha: :func:`dataset_fingerprint` of the training set.
        amp_dtype: the autocast dtype of the teacher's forward pass (None: float32).
        teacher_sha: the teacher's fingerprint (a checkpoint's sha256), or None when unknown (not compared).
    """
    key = json.loads(json.dumps(_flatten(pipeline_key, "pipeline.")))
    key.update(
        amp=str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "off",
        dataset=dataset_sha,
        teacher=teacher_sha,
    )
    return key


def _key_differences(cached: Mapping[str, Any], key: Mapping[str, Any]) -> list[str]:
    """Names of the entries whose values differ, including entries only one side has, in the run's order."""
    return [n for n in dict.fromkeys([*key, *cached]) if cached.get(n) != key.get(n)]


# ----------------------------------------------------------------------------------------------------------------
# Layout of one epoch file


class CacheLayout:
    """Byte layout of an epoch file: three blocks, each 64-byte aligned.

    Args:
        rows: number of samples.
        k: top-K classes stored per sample.
        num_classes: classes of the teacher (decides the index dtype).
        logits_dtype: ``float32`` or ``float16``.
    """

    def __init__(self, rows: int, k: int, num_classes: int, logits_dtype: str = "float32") -> None:
        if logits_dtype not in LOGITS_DTYPES:
            raise CacheError(f"logits dtype must be one of {', '.join(LOGITS_DTYPES)}; got {logits_dtype!r}")
        self.rows, self.k, self.num_classes, self.logits_dtype = rows, k, num_classes, logits_dtype
        self.index_dtype = "int16" if num_classes <= np.iinfo(np.int16).max + 1 else "int32"
        self.blocks: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
        offset = 0
        for name, dtype, shape in (
            ("indices", np.dtype(self.index_dtype), (rows, k)),
            ("logits", np.dtype(logits_dtype), (rows, k)),
            ("stats", np.dtype("float32"), (rows, len(STATS))),
        ):
            self.blocks[name] = (offset, dtype, shape)
            offset += -(-(dtype.itemsize * math.prod(shape)) // _ALIGN) * _ALIGN
        self.epoch_bytes = offset

    @property
    def bytes_per_sample(self) -> int:
        """Stored bytes per (sample, epoch), padding left out."""
        return sum(dtype.itemsize * math.prod(shape[1:]) for _, dtype, shape in self.blocks.values())

    def describe(self) -> dict[str, Any]:
        """Plain-data form for the header."""
        return {
            name: {"offset": offset, "dtype": dtype.name, "shape": list(shape)}
            for name, (offset, dtype, shape) in self.blocks.items()
        }

    def encode(self, indices: torch.Tensor, logits: torch.Tensor, stats: torch.Tensor) -> bytes:
        """The bytes of one epoch file from the (rows, K) indices and logits and the (rows, 4) statistics."""
        buf = bytearray(self.epoch_bytes)
        for name, tensor in (("indices", indices), ("logits", logits), ("stats", stats)):
            offset, dtype, shape = self.blocks[name]
            view = np.frombuffer(buf, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
            view[...] = tensor.detach().cpu().numpy().astype(dtype, copy=False)
        return bytes(buf)

    def open(self, path: Path) -> dict[str, np.ndarray]:
        """The three blocks of an epoch file as copy-on-write memory maps (nothing is read until used)."""
        return {
            name: np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape)
            for name, (offset, dtype, shape) in self.blocks.items()
        }


def epoch_path(root: str | Path, epoch: int) -> Path:
    """``DIR/epoch_0007.bin``."""
    return Path(root) / f"epoch_{epoch:04d}.bin"


# ----------------------------------------------------------------------------------------------------------------
# Writing


def _read_header(root: Path) -> dict[str, Any]:
    path = root / HEADER
    if not path.is_file():
        raise CacheError(f"{root}: no teacher cache here ({HEADER} missing); build one with `augkd teacher-cache`")
    try:
        header = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable cache header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
        got = header.get("format") if isinstance(header, dict) else None
        raise CacheError(f"{path}: not a teacher cache of format {CACHE_FORMAT} (format={got!r})")
    missing = [k for k in ("key", "k", "temperature", "num_classes", "rows", "logits_dtype") if k not in header]
    if missing:
        raise CacheError(f"{path}: damaged cache header (no {', '.join(missing)})")
    return header


def _layout_of(header: Mapping[str, Any]) -> CacheLayout:
    return CacheLayout(int(header["rows"]), int(header["k"]), int(header["num_classes"]), header["logits_dtype"])


def finished_epochs(root: str | Path, header: Mapping[str, Any]) -> list[int]:
    """Epochs whose file is complete (present with the expected size), ascending."""
    root, size = Path(root), _layout_of(header).epoch_bytes
    done = []
    for path in root.glob("epoch_*.bin"):
        stem = path.stem.removeprefix("epoch_")
        if stem.isdigit() and path.stat().st_size == size:
            done.append(int(stem))
    return sorted(done)


def prepare_cache_dir(root: str | Path, header: dict[str, Any], sample_ids: torch.Tensor) -> list[int]:
    """Create a cache folder for ``header`` or reopen one built with the same settings; return finished epochs.

    Leftover temporary files of an interrupted build are removed.

    Raises:
        CacheError: the folder holds a cache built with other settings (named), or a damaged one.
    """
    root = Path(root)
    header = {"format": CACHE_FORMAT, **header}
    if (root / HEADER).exists():
        old = _read_header(root)
        for field in ("key", "k", "temperature", "num_classes", "rows", "logits_dtype"):
            if old[field] != json.loads(json.dumps(header[field])):
                what = field
                if field == "key":
                    name = _key_differences(old["key"], header["key"])[0]
                    what = KEY_NAMES.get(name, name)
                raise CacheError(
                    f"{root} holds a teacher cache built with another {what}; use another --out or delete it"
                )
        ids = torch.from_numpy(np.load(root / SAMPLE_IDS))
        if not torch.equal(ids, sample_ids):
            raise CacheError(f"{root / SAMPLE_IDS}: sample ids differ from the training set's; delete the cache")
    else:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(root / SAMPLE_IDS, lambda f: np.save(f, sample_ids.numpy().astype(np.int64)))
        atomic_write_text(root / HEADER, json.dumps(header, indent=1) + "\n")
    for tmp in root.glob(".epoch_*.tmp"):
        tmp.unlink(missing_ok=True)
    return finished_epochs(root, header)


def write_epoch(
    root: str | Path, epoch: int, layout: CacheLayout, indices: torch.Tensor, logits: torch.Tensor, stats: torch.Tensor
) -> Path:
    """Write one epoch file atomically (rows in ``sample_ids.npy`` order); returns its path."""
    path = epoch_path(root, epoch)
    data = layout.encode(indices, logits, stats)
    atomic_write_bytes(path, lambda f: f.write(data))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Reading


class TeacherCache:
    """A teacher cache opened for reading: :meth:`lookup` gives the teacher's summary of a batch by sample index.

    The epoch in use is memory-mapped (on the CPU rows are read on demand; on a GPU the epoch's few bytes per
    sample are copied to the device once per epoch), so a lookup is a gather: no teacher, no file I/O per step.
    Each rank of a distributed run reads only its own rows.

    Args:
        root: the cache folder.
        device: where lookups are delivered.

    Raises:
        CacheError: missing or damaged header or sample ids.
    """

    def __init__(self, root: str | Path, device: torch.device | str = "cpu") -> None:
        self.root = Path(root)
        self.header = _read_header(self.root)
        self.device = torch.device(device)
        self.layout = _layout_of(self.header)
        self.k, self.temperature = int(self.header["k"]), float(self.header["temperature"])
        try:
            ids = torch.from_numpy(np.load(self.root / SAMPLE_IDS)).to(torch.int64)
        except (OSError, ValueError) as exc:
            raise CacheError(f"{self.root / SAMPLE_IDS}: unreadable ({exc})") from None
        if ids.shape != (self.layout.rows,):
            raise CacheError(f"{self.root / SAMPLE_IDS}: {tuple(ids.shape)} ids for {self.layout.rows} rows")
        self.sample_ids = ids
        rows = torch.full((int(ids.max()) + 1 if len(ids) else 0,), -1, dtype=torch.int64)
        rows[ids] = torch.arange(len(ids))
        self._rows = rows.to(self.device)
        self._epoch: int | None = None
        self._blocks: dict[str, torch.Tensor] = {}

    @property
    def epochs(self) -> list[int]:
        """Finished epochs on disk."""
        return finished_epochs(self.root, self.header)

    @property
    def bytes_per_sample(self) -> int:
        """Stored bytes per (sample, epoch)."""
        return self.layout.bytes_per_sample

    def check(
        self,
        key: Mapping[str, Any],
        *,
        epochs: int,
        k: int,
        temperature: float,
        mode: str,
        num_classes: int,
    ) -> None:
        """Refuse to serve a run whose teacher outputs would differ from what the cache holds.

        Args:
            key: the run's :func:`cache_key` (a None ``teacher`` entry is not compared).
            epochs: the run trains epochs ``0 .. epochs-1``; each needs its file.
            k: the run's ``kd.k`` (at most the cache's K).
            temperature: the run's ``kd.temperature``.
            mode: the run's ``kd.mode`` (``partial`` needs the log-sum-exp at the run's temperature).
            num_classes: classes of the run's data.

        Raises:
            CacheError: the first mismatch, named with both values.
        """
        cached = self.header["key"]
        for name in _key_differences(cached, key):
            value = key.get(name)
            if name == "teacher" and value is None:
                continue  # an unknown teacher (kd.cache alone) is not compared; every other entry must match
            label = KEY_NAMES.get(name, name)
            if name == "dataset":
                info = self.header.get("dataset", {})
                raise CacheError(
                    f"{self.root}: built on another training set ({info.get('name')}/{info.get('split')}, "
                    f"{info.get('num_images')} images, subset {info.get('subset')}) than this run's (data.*)"
                )
            if name == "teacher":
                raise CacheError(f"{self.root}: built from another teacher checkpoint than kd.teacher (sha256 differs)")
            raise CacheError(f"{self.root}: built with {label}={cached.get(name)!r}, but this run has {value!r}")
        if int(self.header["num_classes"]) != num_classes:
            raise CacheError(
                f"{self.root}: the teacher had {self.header['num_classes']} classes; this run's data {num_classes}"
            )
        if k > self.k:
            raise CacheError(f"{self.root}: holds the teacher's top-{self.k} classes, but this run asks kd.k={k}")
        if mode == "partial" and temperature not in (self.temperature, 1.0):
            raise CacheError(
                f"{self.root}: kd.mode=partial needs the log-sum-exp of all logits at T={temperature}; the cache has "
                f"it at T={self.temperature} and T=1 only (use kd.mode=renorm, or build the cache at this T)"
            )
        done = set(self.epochs)
        missing = [e for e in range(epochs) if e not in done]
        if missing:
            have = f"epochs {min(done)}..{max(done)}" if done else "no finished epoch"
            raise CacheError(
                f"{self.root}: the run trains {epochs} epochs but the cache has {have}; missing "
                f"{epoch_path(self.root, missing[0]).name} (run `augkd teacher-cache --epochs {epochs}` again)"
            )

    def _load(self, epoch: int) -> None:
        path = epoch_path(self.root, epoch)
        if not path.is_file() or path.stat().st_size != self.layout.epoch_bytes:
            raise CacheError(f"{path}: missing or incomplete epoch file of the teacher cache")
        blocks = {name: torch.from_numpy(block) for name, block in self.layout.open(path).items()}
        if self.device.type != "cpu":
            blocks = {name: t.to(self.device) for name, t in blocks.items()}
        self._epoch, self._blocks = epoch, blocks

    def lookup(self, epoch: int, indices: torch.Tensor, k: int, temperature: float) -> TeacherTopK:
        """The teacher's summary of the samples ``indices`` (sample ids) at ``epoch``, for a loss with ``k``, T.

        ``lse`` is None unless ``temperature`` is the cache's or 1 (``renorm`` does not need it).
        """
        if epoch != self._epoch:
            self._load(epoch)
        rows = self._rows[indices.to(self._rows.device)]
        b = self._blocks
        top = b["indices"][rows, :k].to(torch.int64)
        logits = b["logits"][rows, :k].to(torch.float32)
        stats = b["stats"][rows]
        lse = stats[:, 0] if temperature == self.temperature else stats[:, 1] if temperature == 1.0 else None
        return TeacherTopK(top, logits, lse, stats[:, 2], stats[:, 3])
