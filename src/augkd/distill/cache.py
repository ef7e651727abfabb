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
                       included, dataset fingerprint, teacher fingerprint, autocast dtype), K, T, dtypes, layout,
                       provenance
    sample_ids.npy     int64 (N,): the sample id of each row (ascending)
    epoch_0000.bin     one raw file per epoch, three blocks (64-byte aligned), read with numpy.memmap,
                       then a 256-byte seal (:mod:`augkd.digest`): the SHA-256 of the blocks, the epoch, and
                       the digest of the cache's identity (key, K, T, classes, rows, logits dtype, float16
                       layout version)

The blocks (:class:`CacheLayout`), per sample and epoch::

    --dtype float32 (exact, the default): 6K + 16 bytes (76 at K=10)
        indices  (N, K) int16 (int32 above 32,768 classes)
        logits   (N, K) float32
        stats    (N, 4) float32: lse at T, lse at 1, entropy, log p(label)
    --dtype float16: ceil(K b / 8) + 2K + 8 bytes (41 at K=10 and 1,000 classes, 16 at K=3 and 10 classes)
        indices  (N, ceil(K b / 8)) uint8: K indices of b = ceil(log2 classes) bits each, packed (int16 or
                 int32 where packing saves nothing)
        logits   (N, K) float16
        stats    (N, 4) float16: lse at T - lse_K at T, lse at 1 - lse_K at 1, entropy, log p(label), where
                 lse_K is the log-sum-exp of the K stored logits: each lse is kept as -log of the teacher's
                 top-K mass, a number in [0, log classes] where float16's steps are fine

A float16 epoch is decoded once when a reader opens it (indices unpacked, log-sum-exps restored in float32),
which the value checks need anyway, so a lookup costs what it costs in float32. The float16 layout changes the
KD term of a batch by about 1e-4 of itself against float32 (the rounding of the logits, as in the earlier
float16 layout that kept the statistics in float32; ``results/README.md``). Float16 caches written by augkd
before the float16 layout was versioned (56 bytes at K=10) are refused with one line: build them again.

Every file is written to a temporary name and renamed into place, so an epoch file exists exactly when it is
complete: an interrupted build keeps its finished epochs and redoes the partial one. An epoch file is trusted
only under its seal: a reader hashes it when it first opens it and checks its class indices and values, and
refuses, in one line naming the file, a flipped or truncated byte, a file of another epoch renamed into place,
or a file built under another key (e.g. left behind when ``header.json`` was lost and rewritten). A build run
again over a damaged cache rebuilds exactly the epochs whose files fail their seal.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from augkd import faults
from augkd.digest import TRAILER_BYTES, SealError, check_seal, encode_trailer, make_seal, read_trailer
from augkd.distill.loss import TeacherTopK, logsumexp_at
from augkd.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from augkd.data.memory import InMemoryDataset
    from augkd.data.stream import StreamDataset

__all__ = [
    "CACHE_FORMAT",
    "LOGITS_DTYPES",
    "CacheError",
    "CacheLayout",
    "TeacherCache",
    "cache_identity",
    "cache_key",
    "dataset_fingerprint",
    "describe_dataset_for_cache",
    "epoch_path",
    "file_sha256",
    "finished_epochs",
    "prepare_cache_dir",
    "validate_epoch",
    "verify_epochs",
    "write_epoch",
]

CACHE_FORMAT = "augkd-teacher-cache/2"  # 2: the key is the pipeline's own (stage by stage); epoch files sealed
HEADER = "header.json"
SAMPLE_IDS = "sample_ids.npy"
#: Storage layouts, named by the dtype of the top-K logits (``float16`` also packs the class indices and keeps
#: the four per-image statistics in float16; see :class:`CacheLayout`).
LOGITS_DTYPES = ("float32", "float16")
#: Columns of the per-image statistics block.
STATS = ("lse_t", "lse_1", "entropy", "log_p_label")
_ALIGN = 64
_WRITES = itertools.count(1)  # epoch-file writes of this process, for AUGKD_FAULT=kill_during_cache_write:<n>
#: Header entries that decide an epoch file's bytes: their digest is sealed into every epoch file.
IDENTITY = ("key", "k", "temperature", "num_classes", "rows", "logits_dtype")
#: Identity entries only some layouts' headers hold (float32 headers have none, so their seals stay as they were).
LAYOUT_IDENTITY = ("float16_layout",)

#: How a mismatch of a key entry is named to the user (``pipeline.*`` entries are named by their own path: the
#: stage and the setting, e.g. ``pipeline.stages.augment.policy.magnitude``).
KEY_NAMES: dict[str, str] = {
    "amp": "amp (autocast dtype of the teacher's forward pass)",
    "dataset": "training-set fingerprint",
    "teacher": "teacher fingerprint (weights sha256, size, normalization, class map)",
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


def dataset_fingerprint(dataset: InMemoryDataset | StreamDataset) -> str:
    """Hex SHA-256 of a dataset's classes, sample ids, labels and image bytes (subsets differ by their ids); of a
    stream loader's split, its files' names and sizes instead of their bytes (:meth:`StreamDataset.fingerprint`)."""
    own = getattr(dataset, "fingerprint", None)
    if callable(own):
        return own()
    h = hashlib.sha256(json.dumps({"classes": list(dataset.classes)}).encode())
    for t in (dataset.sample_ids, dataset.labels, dataset.images):
        h.update(memoryview(t.contiguous().numpy()).cast("B"))
    return h.hexdigest()


def describe_dataset_for_cache(dataset: InMemoryDataset | StreamDataset) -> dict[str, Any]:
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
    pipeline_key: Mapping[str, Any],
    dataset_sha: str,
    amp_dtype: torch.dtype | None,
    teacher_sha: str | None,
    loader_key: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The key of a run's teacher outputs: everything that decides the augmented image and the teacher's answer.

    Args:
        pipeline_key: the training pipeline's own key (:meth:`augkd.data.pipeline.BatchPipeline.replay_key`):
            every stage reports what makes its output reproducible, so a new stage changes the key by itself.
        dataset_sha: :func:`dataset_fingerprint` of the training set.
        amp_dtype: the autocast dtype of the teacher's forward pass (None: float32).
        teacher_sha: the teacher's fingerprint (a checkpoint's sha256), or None when unknown (not compared).
        loader_key: what the loader itself does to the pixels, for a loader that crops (the stream loader's
            :meth:`~augkd.data.stream.StreamLoader.replay_key`); None for the in-memory loader, whose keys are
            those of earlier augkd.
    """
    flat = _flatten(pipeline_key, "pipeline.")
    if loader_key is not None:
        flat = {**_flatten(loader_key, "loader."), **flat}
    key = json.loads(json.dumps(flat))
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


#: The float16 layout's version, in its header and sealed into its epoch files (float32 headers have none, so
#: their files and seals are those of earlier augkd). 2: packed class indices, float16 statistics (41 bytes at
#: K=10 and 1,000 classes); float16 caches of the earlier 56-byte layout are refused when opened.
FLOAT16_LAYOUT = 2
#: Largest class-index width that is packed (wider indices are stored as int32).
_MAX_PACKED_BITS = 31
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def index_bits(num_classes: int) -> int:
    """Bits of a class index in ``[0, num_classes)``: ``ceil(log2(num_classes))``, at least 1."""
    return max(1, (num_classes - 1).bit_length())


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """``(rows, K)`` class indices as ``(rows, ceil(K * bits / 8))`` bytes: index ``j`` of a row holds bits
    ``j * bits .. (j + 1) * bits - 1`` of the row, least significant first (the byte order of little-endian
    integers); the last byte of a row is zero-padded, so every row starts on a byte.

    Raises:
        CacheError: an index that ``bits`` bits cannot hold (negative, or ``>= 2**bits``).
    """
    rows, k = indices.shape
    values = np.asarray(indices, dtype=np.int64)
    if values.size and (int(values.min()) < 0 or int(values.max()) >= 1 << bits):
        raise CacheError(
            f"class indices must lie in [0, {1 << bits}) to be packed in {bits} bits; got "
            f"{int(values.min())}..{int(values.max())}"
        )
    out = np.zeros((rows, -(-k * bits // 8)), dtype=np.uint8)
    for j in range(k):  # K x (bytes an index spans) whole-column operations: no Python loop over rows
        start = j * bits
        shifted = values[:, j] << (start % 8)
        for n, byte in enumerate(range(start // 8, (start + bits - 1) // 8 + 1)):
            out[:, byte] |= ((shifted >> (8 * n)) & 0xFF).astype(np.uint8)
    return out


def unpack_indices(packed: np.ndarray, k: int, bits: int) -> np.ndarray:
    """The ``(rows, k)`` class indices of :func:`pack_indices` rows (int16 up to 15 bits, else int32).

    Index ``j`` is read from the bytes its bits span, whole columns at a time (K x at most 5 column operations,
    no loop over rows): they are joined into a little-endian window, shifted right by ``j * bits % 8`` and
    masked to ``bits`` bits.
    """
    packed = np.asarray(packed)
    out = np.empty((len(packed), k), dtype=np.int16 if bits <= 15 else np.int32)
    for j in range(k):
        start = j * bits
        first, last = start // 8, (start + bits - 1) // 8
        window = packed[:, first].astype(np.int64)
        for n, byte in enumerate(range(first + 1, last + 1), start=1):
            window |= packed[:, byte].astype(np.int64) << (8 * n)
        out[:, j] = (window >> (start % 8)) & ((1 << bits) - 1)
    return out


class CacheLayout:
    """Byte layout of an epoch file: three blocks, each 64-byte aligned.

    ``float32`` (the exact default): indices ``(rows, K)`` int16 (int32 above 32,768 classes), logits
    ``(rows, K)`` float32, statistics ``(rows, 4)`` float32 ``[lse at T, lse at 1, entropy, log p(label)]``.

    ``float16``: indices packed to ``ceil(log2(classes))`` bits each (:func:`pack_indices`; int16/int32 where
    packing saves nothing), logits ``(rows, K)`` float16, statistics ``(rows, 4)`` float16 ``[lse at T -
    lse_K at T, lse at 1 - lse_K at 1, entropy, log p(label)]``, where ``lse_K`` is the log-sum-exp of the row's
    K stored (float16) logits. Each log-sum-exp is thus kept as ``-log`` of the teacher's probability mass on
    its top K, a number in ``[0, log classes]`` (0 for a confident teacher or K = classes) where float16 is far
    finer than at the size of a log-sum-exp itself (0.008 at 25); ``partial`` mode's ``log p_T`` over the K
    classes is the exact log-softmax of the stored logits plus that one stored number. At K=10 and 1,000
    classes: 13 + 20 + 8 = 41 bytes.

    Args:
        rows: number of samples.
        k: top-K classes stored per sample.
        num_classes: classes of the teacher (decides the index dtype or width).
        logits_dtype: ``float32`` or ``float16``.
        temperature: the cache's temperature (the float16 layout stores ``lse at T`` relative to ``lse_K at T``);
            needed to encode and decode a float16 layout, not for its sizes.
    """

    def __init__(
        self,
        rows: int,
        k: int,
        num_classes: int,
        logits_dtype: str = "float32",
        temperature: float | None = None,
    ) -> None:
        if logits_dtype not in LOGITS_DTYPES:
            raise CacheError(f"logits dtype must be one of {', '.join(LOGITS_DTYPES)}; got {logits_dtype!r}")
        self.rows, self.k, self.num_classes, self.logits_dtype = rows, k, num_classes, logits_dtype
        self.temperature = temperature
        self.index_dtype = "int16" if num_classes <= np.iinfo(np.int16).max + 1 else "int32"
        self.index_bits = index_bits(num_classes)
        row_bytes = -(-k * self.index_bits // 8)
        self.packed = (
            logits_dtype == "float16"
            and self.index_bits <= _MAX_PACKED_BITS
            and row_bytes < k * np.dtype(self.index_dtype).itemsize
        )
        indices: tuple[np.dtype, tuple[int, ...]] = (np.dtype(self.index_dtype), (rows, k))
        if self.packed:
            self.index_dtype = f"packed{self.index_bits}"
            indices = (np.dtype("uint8"), (rows, row_bytes))
        stats_dtype = np.dtype("float16" if logits_dtype == "float16" else "float32")
        self.blocks: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
        offset = 0
        for name, dtype, shape in (
            ("indices", *indices),
            ("logits", np.dtype(logits_dtype), (rows, k)),
            ("stats", stats_dtype, (rows, len(STATS))),
        ):
            self.blocks[name] = (offset, dtype, shape)
            offset += -(-(dtype.itemsize * math.prod(shape)) // _ALIGN) * _ALIGN
        self.payload_bytes = offset
        #: Size of an epoch file: the blocks and the seal.
        self.epoch_bytes = offset + TRAILER_BYTES

    @property
    def bytes_per_sample(self) -> int:
        """Stored bytes per (sample, epoch), padding left out."""
        return sum(dtype.itemsize * math.prod(shape[1:]) for _, dtype, shape in self.blocks.values())

    @property
    def stats_columns(self) -> list[str]:
        """What the columns of the statistics block hold."""
        if self.logits_dtype == "float16":
            return ["lse_t - lse_k_t", "lse_1 - lse_k_1", "entropy", "log_p_label"]
        return list(STATS)

    def describe(self) -> dict[str, Any]:
        """Plain-data form for the header."""
        described = {
            name: {"offset": offset, "dtype": dtype.name, "shape": list(shape)}
            for name, (offset, dtype, shape) in self.blocks.items()
        }
        if self.packed:
            described["indices"]["bits"] = self.index_bits
        return described

    def header_entries(self) -> dict[str, Any]:
        """What a cache header records about the layout (the float16 layout's version is sealed with it)."""
        entries = {
            "index_dtype": self.index_dtype,
            "bytes_per_sample": self.bytes_per_sample,
            "epoch_bytes": self.epoch_bytes,
            "layout": self.describe(),
            "stats_columns": self.stats_columns,
        }
        if self.logits_dtype == "float16":
            entries["float16_layout"] = FLOAT16_LAYOUT
        return entries

    def _temperature(self) -> float:
        if self.temperature is None:
            raise CacheError("the float16 cache layout needs the cache's temperature (CacheLayout(temperature=...))")
        return self.temperature

    def encode(self, indices: torch.Tensor, logits: torch.Tensor, stats: torch.Tensor) -> bytes:
        """The bytes of one epoch file from the (rows, K) indices and logits and the (rows, 4) statistics
        ``[lse at T, lse at 1, entropy, log p(label)]``.

        Raises:
            CacheError: in the float16 layout, a finite logit beyond float16's range (+-65504), or an index that
                cannot be packed.
        """
        arrays = {name: t.detach().cpu().numpy() for name, t in (("indices", indices), ("logits", logits))}
        arrays["stats"] = stats.detach().cpu().numpy()
        if self.logits_dtype == "float16":
            arrays.update(self._float16_blocks(**arrays))
        buf = bytearray(self.payload_bytes)
        for name, array in arrays.items():
            offset, dtype, shape = self.blocks[name]
            view = np.frombuffer(buf, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
            view[...] = array.astype(dtype, copy=False)
        return bytes(buf)

    def _float16_blocks(self, indices: np.ndarray, logits: np.ndarray, stats: np.ndarray) -> dict[str, np.ndarray]:
        finite = np.isfinite(logits)
        if bool((np.abs(logits[finite]) > _FLOAT16_MAX).any()):
            biggest = float(np.abs(logits[finite]).max())
            raise CacheError(
                f"a teacher logit of magnitude {biggest:g} does not fit float16 (at most {_FLOAT16_MAX:g}); "
                "build the cache with --dtype float32"
            )
        half = logits.astype(np.float16)
        rel = torch.from_numpy(stats.astype(np.float32, copy=True))
        rel[:, :2] -= self._lse_offsets(torch.from_numpy(half))
        rel[:, 3].clamp_(min=-_FLOAT16_MAX)  # p(label) below exp(-65504) is 0 in float32 already
        blocks = {"logits": half, "stats": rel.numpy()}
        if self.packed:
            blocks["indices"] = pack_indices(indices, self.index_bits)
        return blocks

    def _lse_offsets(self, logits: torch.Tensor) -> torch.Tensor:
        """``(rows, 2)`` log-sum-exps of the K stored logits at T and at 1, in float32 (writer and reader share
        this function, so a stored difference comes back as the number it was)."""
        logits = logits.to(torch.float32)
        return torch.stack([logsumexp_at(logits, self._temperature()), logsumexp_at(logits, 1.0)], dim=1)

    def open(self, path: Path) -> dict[str, np.ndarray]:
        """The three blocks of an epoch file as copy-on-write memory maps (nothing is read until used)."""
        return {
            name: np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape)
            for name, (offset, dtype, shape) in self.blocks.items()
        }

    def decode(self, blocks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The opened blocks as the reader serves them: indices ``(rows, K)``, logits ``(rows, K)`` and float32
        statistics ``[lse at T, lse at 1, entropy, log p(label)]``.

        The float32 layout is returned as it is (memory maps). The float16 layout is decoded once for the whole
        epoch when it is opened, which the load check needs anyway: indices unpacked (int16 up to 32,768
        classes), the log-sum-exps restored (float32), the logits left as float16 memory maps. A lookup then
        gathers its rows as from the float32 layout, at no extra cost per batch; the epoch takes
        ``(2 or 4) K + 2 K + 16`` bytes per row in memory, on disk the layout's.
        """
        if self.logits_dtype == "float32":
            return dict(blocks)
        logits = blocks["logits"]
        stats = np.array(blocks["stats"], dtype=np.float32)
        for start in range(0, len(stats), 1 << 16):  # slices keep the float32 temporaries small
            part = slice(start, start + (1 << 16))
            stats[part, :2] += self._lse_offsets(torch.from_numpy(np.ascontiguousarray(logits[part]))).numpy()
        indices = blocks["indices"]
        if self.packed:
            indices = unpack_indices(indices, self.k, self.index_bits)
        return {"indices": indices, "logits": logits, "stats": stats}


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
        older = isinstance(got, str) and got.startswith("augkd-teacher-cache/")
        hint = "; built by an older augkd without sealed epoch files: delete it and build it again" if older else ""
        raise CacheError(f"{path}: not a teacher cache of format {CACHE_FORMAT} (format={got!r}){hint}")
    missing = [k for k in ("key", "k", "temperature", "num_classes", "rows", "logits_dtype") if k not in header]
    if missing:
        raise CacheError(f"{path}: damaged cache header (no {', '.join(missing)})")
    if header["logits_dtype"] == "float16" and header.get("float16_layout") != FLOAT16_LAYOUT:
        raise CacheError(
            f"{path}: a float16 cache in another layout (float16_layout={header.get('float16_layout')!r}; this augkd "
            f"reads {FLOAT16_LAYOUT}, older ones wrote none): delete it and build it again"
        )
    return header


def _layout_of(header: Mapping[str, Any]) -> CacheLayout:
    return CacheLayout(
        int(header["rows"]),
        int(header["k"]),
        int(header["num_classes"]),
        header["logits_dtype"],
        float(header["temperature"]),
    )


def cache_identity(header: Mapping[str, Any]) -> dict[str, Any]:
    """What decides an epoch file's bytes (the key, K, T, classes, rows, logits dtype, and the float16 layout's
    version where the header has one): sealed into every file."""
    names = [*IDENTITY, *(name for name in LAYOUT_IDENTITY if name in header)]
    return {name: json.loads(json.dumps(header[name])) for name in names}


def _check_epoch_file(path: Path, header: Mapping[str, Any], epoch: int, contents: bool) -> None:
    """Raise :class:`SealError` unless ``path`` is a sealed epoch file of this cache's identity and ``epoch``."""
    seal = read_trailer(path)
    check_seal(path, seal, cache_identity(header), contents=contents, epoch=epoch)
    if seal["bytes"] + TRAILER_BYTES != _layout_of(header).epoch_bytes:
        raise SealError(f"{path}: {seal['bytes']} bytes sealed, the layout has {_layout_of(header).payload_bytes}")


def _epoch_files(root: Path) -> dict[int, Path]:
    files = {}
    for path in root.glob("epoch_*.bin"):
        stem = path.stem.removeprefix("epoch_")
        if stem.isdigit():
            files[int(stem)] = path
    return files


def verify_epochs(
    root: str | Path, header: Mapping[str, Any], *, contents: bool = True
) -> tuple[list[int], dict[int, str]]:
    """Sort the epoch files of a cache folder into good and damaged.

    Args:
        root: the cache folder.
        header: its header (the seal of every epoch file must carry its :func:`cache_identity`).
        contents: hash every file (otherwise only sizes and seals are compared: no payload is read).

    Returns:
        ``(good, damaged)``: the epochs whose file holds its seal, ascending, and ``{epoch: reason}`` of the
        others (a one-line reason naming the file).
    """
    good, damaged = [], {}
    for epoch, path in sorted(_epoch_files(Path(root)).items()):
        try:
            _check_epoch_file(path, header, epoch, contents)
        except SealError as exc:
            damaged[epoch] = str(exc)
        else:
            good.append(epoch)
    return good, damaged


def finished_epochs(root: str | Path, header: Mapping[str, Any]) -> list[int]:
    """Epochs whose file is complete and sealed for this cache (sizes and seals only; no payload is read)."""
    return verify_epochs(root, header, contents=False)[0]


def prepare_cache_dir(
    root: str | Path, header: dict[str, Any], sample_ids: torch.Tensor
) -> tuple[list[int], dict[int, str]]:
    """Create a cache folder for ``header`` or reopen one built with the same settings.

    Leftover temporary files of an interrupted build are removed and every epoch file is checked against its
    seal (hashed), so a build run again redoes exactly the missing and damaged epochs.

    Returns:
        ``(good, damaged)`` as :func:`verify_epochs`.

    Raises:
        CacheError: the folder holds a cache built with other settings (named), or a damaged header.
    """
    root = Path(root)
    header = {"format": CACHE_FORMAT, **header}
    if (root / HEADER).exists():
        old = _read_header(root)
        for field in [*IDENTITY, *LAYOUT_IDENTITY]:
            if old.get(field) != json.loads(json.dumps(header.get(field))):
                what = field
                if field == "key":
                    name = _key_differences(old["key"], header["key"])[0]
                    what = KEY_NAMES.get(name, name)
                raise CacheError(
                    f"{root} holds a teacher cache built with another {what}; use another --out or delete it"
                )
        try:
            ids = torch.from_numpy(np.load(root / SAMPLE_IDS))
        except (OSError, ValueError) as exc:
            raise CacheError(f"{root / SAMPLE_IDS}: unreadable ({exc}); delete the cache") from None
        if not torch.equal(ids, sample_ids):
            raise CacheError(f"{root / SAMPLE_IDS}: sample ids differ from the training set's; delete the cache")
    else:
        # Epoch files left without a header (header.json lost) stay, but only those sealed under this header's
        # identity count as finished: a file built for another key is rebuilt, never reused.
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(root / SAMPLE_IDS, lambda f: np.save(f, sample_ids.numpy().astype(np.int64)))
        atomic_write_text(root / HEADER, json.dumps(header, indent=1) + "\n")
    for tmp in root.glob(".epoch_*.tmp"):
        tmp.unlink(missing_ok=True)
    return verify_epochs(root, header)


def write_epoch(
    root: str | Path,
    epoch: int,
    layout: CacheLayout,
    indices: torch.Tensor,
    logits: torch.Tensor,
    stats: torch.Tensor,
    header: Mapping[str, Any],
) -> Path:
    """Write one sealed epoch file atomically (rows in ``sample_ids.npy`` order); returns its path.

    ``header`` is the cache's header: its :func:`cache_identity` goes into the seal.
    """
    path = epoch_path(root, epoch)
    data = layout.encode(indices, logits, stats)
    trailer = encode_trailer(make_seal(data, cache_identity(header), epoch=epoch))
    n = next(_WRITES)

    def write(f: Any) -> None:
        if faults.armed("kill_during_cache_write", n):  # a build killed mid-write, for the soak test
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            faults.kill_now()
        f.write(data)
        f.write(trailer)

    atomic_write_bytes(path, write)
    return path


def validate_epoch(path: Path, blocks: Mapping[str, np.ndarray], num_classes: int) -> None:
    """Check the values of an opened epoch file: what a sealed file from a faulty writer could still get wrong.

    ``blocks`` are decoded (:meth:`CacheLayout.decode`: unpacked indices, restored log-sum-exps). Class indices
    must lie in ``[0, num_classes)`` and differ within a row (a top-K list), logits and statistics
    must be finite, and a row's logits must not increase (top-K order).

    Raises:
        CacheError: one line naming the file, the block and the first bad row.
    """
    # Whole-block tests first (a few ms for 50,000 rows); the first bad row is located only when one fails.
    idx = np.asarray(blocks["indices"])
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num_classes):
        row = int(np.flatnonzero(((idx < 0) | (idx >= num_classes)).any(axis=1))[0])
        raise CacheError(f"{path}: row {row} holds class index {idx[row].tolist()} outside [0, {num_classes})")
    if idx.shape[1] > 1:
        ordered = np.sort(idx, axis=1)
        repeats = ordered[:, 1:] == ordered[:, :-1]
        if repeats.any():
            row = int(np.flatnonzero(repeats.any(axis=1))[0])
            raise CacheError(f"{path}: row {row} repeats a class in its top-K indices {idx[row].tolist()}")
    for name in ("logits", "stats"):
        values = np.asarray(blocks[name])
        if not np.isfinite(values.sum(dtype=np.float64)):  # one pass; a NaN or an Inf anywhere makes it so
            row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
            raise CacheError(f"{path}: row {row} of the {name} block is not finite")
    logits = np.asarray(blocks["logits"])
    if logits.shape[1] > 1:
        rising = logits[:, 1:] > logits[:, :-1]
        if rising.any():
            row = int(np.flatnonzero(rising.any(axis=1))[0])
            raise CacheError(f"{path}: row {row} holds logits out of top-K order")


# ----------------------------------------------------------------------------------------------------------------
# Reading


class TeacherCache:
    """A teacher cache opened for reading: :meth:`lookup` gives the teacher's summary of a batch by sample index.

    The epoch in use is memory-mapped (on the CPU rows are read on demand; on a GPU the epoch's few bytes per
    sample are copied to the device once per epoch), so a lookup is a gather: no teacher, no file I/O per step.
    A float16 epoch is decoded once when it is opened (:meth:`CacheLayout.decode`), so its lookups are the same
    gather.
    Each rank of a distributed run reads only its own rows.

    Args:
        root: the cache folder.
        device: where lookups are delivered.

    Raises:
        CacheError: missing or damaged header or sample ids; on a lookup, an epoch file that fails its seal or
            holds impossible values (one line naming the file).
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
        if len(ids) and (int(ids[0]) < 0 or bool((ids[1:] <= ids[:-1]).any())):
            raise CacheError(f"{self.root / SAMPLE_IDS}: sample ids must be ascending and >= 0 (damaged file)")
        self.sample_ids = ids
        rows = torch.full((int(ids.max()) + 1 if len(ids) else 0,), -1, dtype=torch.int64)
        rows[ids] = torch.arange(len(ids))
        self._rows = rows.to(self.device)
        self._epoch: int | None = None
        self._blocks: dict[str, torch.Tensor] = {}
        self._verified: set[int] = set()

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
        loaders = ["stream" if any(n.startswith("loader.") for n in k) else "memory" for k in (cached, key)]
        if loaders[0] != loaders[1]:  # the crops happen in another place: every pixel differs
            raise CacheError(
                f"{self.root}: built with data.loader={loaders[0]}, but this run has data.loader={loaders[1]}"
            )
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
                raise CacheError(
                    f"{self.root}: built from another teacher than kd.teacher (its fingerprint differs: the weights, "
                    "or the teacher's size, normalization or class map)"
                )
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
        good, damaged = verify_epochs(self.root, self.header, contents=False)
        bad = [e for e in range(epochs) if e in damaged]
        if bad:
            raise CacheError(f"{damaged[bad[0]]} (epoch {bad[0]}; run `augkd teacher-cache` again to rebuild it)")
        done = set(good)
        missing = [e for e in range(epochs) if e not in done]
        if missing:
            have = f"epochs {min(done)}..{max(done)}" if done else "no finished epoch"
            raise CacheError(
                f"{self.root}: the run trains {epochs} epochs but the cache has {have}; missing "
                f"{epoch_path(self.root, missing[0]).name} (run `augkd teacher-cache --epochs {epochs}` again)"
            )

    def _load(self, epoch: int) -> None:
        """Open an epoch file: its seal is checked (hashed) the first time this reader opens it, then its values."""
        path = epoch_path(self.root, epoch)
        try:
            _check_epoch_file(path, self.header, epoch, contents=epoch not in self._verified)
        except SealError as exc:
            raise CacheError(f"{exc} (epoch {epoch}; run `augkd teacher-cache` again to rebuild it)") from None
        arrays = self.layout.decode(self.layout.open(path))
        if epoch not in self._verified:
            validate_epoch(path, arrays, int(self.header["num_classes"]))
            self._verified.add(epoch)
        blocks = {name: torch.from_numpy(block) for name, block in arrays.items()}
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
