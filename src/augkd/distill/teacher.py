"""A frozen teacher that looks at the student's exact input batch (the paper's section 3.3).

A teacher comes from a source of :data:`TEACHER_SOURCES`, named by ``kd.teacher``:

- ``runs/x/best.pt``: an augkd run checkpoint (its network, weights, classes and normalization);
- ``timm:NAME`` / ``torchvision:NAME``: any network of those libraries with the weights of
  ``kd.teacher_weights`` (a ``.safetensors`` file, a ``.pth``/``.pt`` state dict read with ``weights_only=True``,
  or ``pretrained`` from the hub caches on this machine), its normalization and native input size from the
  library (timm's pretrained config, torchvision's weights meta) unless ``kd.teacher_norm`` / ``kd.teacher_size``
  say otherwise.

The teacher is frozen (no parameter requires a gradient), stays in eval mode whatever ``train()`` is called with,
and runs without autograd. It sees the very same augmented images as the student: when its normalization differs
from the student's, the normalized batch is converted with one per-channel affine map; when its input size
differs, the batch is resized on the device (bilinear, antialiased), as FKD and the paper's B7-to-B8 setting do.
A teacher whose classes are not the student's (an ImageNet-1k head for Imagewoof) answers through a class map
(``kd.class_map``): its logits are restricted to the student's classes, in the student's order, before the top-K.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from augkd.distill.cache import file_sha256
from augkd.models.checkpoint import RunCheckpoint, class_mismatch, read_run_checkpoint
from augkd.models.external import (
    EXTERNAL_SOURCES,
    WeightsError,
    classifier_keys,
    create_external,
    load_weights,
    read_weight_file,
    resolve_weights,
)
from augkd.registry import Registry

__all__ = [
    "RANDOM_WEIGHTS",
    "TEACHER_SOURCES",
    "Teacher",
    "TeacherError",
    "TeacherSource",
    "TeacherSpec",
    "class_map_groups",
    "describe_teacher",
    "load_teacher",
    "parse_teacher",
    "teacher_fingerprint",
    "teacher_missing",
]

#: ``TeacherSpec.weights`` of a stand-in with random weights (dry runs and cost calibration; not a config value).
RANDOM_WEIGHTS = "<random>"


class TeacherError(ValueError):
    """A teacher that cannot serve this student (wrong classes, a class map that leaves classes out, no weights)."""


Norm = tuple[tuple[float, ...], tuple[float, ...]]


class Teacher(nn.Module):
    """Frozen, eval-mode wrapper around a model.

    Args:
        model: the teacher network.
        student_norm: (mean, std) the student's inputs were normalized with.
        teacher_norm: (mean, std) the teacher was trained with; None means the same as the student's.
        size: the teacher's square input size; a batch of another size is resized to it (bilinear, antialiased).
            None: the student's.
        class_groups: for each student class, in the student's order, the teacher classes it stands for; the
            teacher's logits are restricted to them (a group of several gets the log of their summed
            probabilities). None: the teacher's classes are the student's.
    """

    def __init__(
        self,
        model: nn.Module,
        student_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        teacher_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        size: int | None = None,
        class_groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()
        self.size = size
        scale = shift = None
        if student_norm is not None and teacher_norm is not None:
            ms, ss = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in student_norm)
            mt, st = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in teacher_norm)
            if not (torch.equal(ms, mt) and torch.equal(ss, st)):
                # x_t = ((x_s * s_s + m_s) - m_t) / s_t
                scale, shift = ss / st, (ms - mt) / st
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)
        index = mask = None
        if class_groups is not None:
            width = max(len(g) for g in class_groups)
            index = torch.tensor([list(g) + [g[0]] * (width - len(g)) for g in class_groups], dtype=torch.int64)
            if width > 1:
                mask = torch.tensor([[i >= len(g) for i in range(width)] for g in class_groups])
            else:
                index = index[:, 0]
        self.register_buffer("class_index", index, persistent=False)
        self.register_buffer("class_pad", mask, persistent=False)

    def train(self, mode: bool = True) -> Teacher:
        """The teacher always stays in eval mode (BN statistics and dropout frozen)."""
        return super().train(False)

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """The teacher's logits of the student's classes (unchanged without a class map)."""
        if self.class_index is None:
            return logits
        if self.class_pad is None:
            return logits.index_select(1, self.class_index)
        grouped = logits[:, self.class_index].float().masked_fill(self.class_pad, -math.inf)
        return grouped.logsumexp(dim=2).to(logits.dtype)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher logits of the student's classes for a batch normalized for the student (no gradient)."""
        if self.scale is not None:
            images = torch.addcmul(self.shift, images, self.scale)
        if self.size is not None and tuple(images.shape[-2:]) != (self.size, self.size):
            # Affine normalization commutes with the (weights sum to one) resampling: resizing here equals
            # resizing the [0, 1] image and normalizing it afterwards.
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True)
        return self.restrict(self.model(images))


# ----------------------------------------------------------------------------------------------------------------
# What kd.* says about the teacher


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher as the config names it (``kd.teacher`` and the keys beside it).

    Attributes:
        source: a name of :data:`TEACHER_SOURCES`.
        ref: the checkpoint's path, or the network's name in its library.
        weights: ``kd.teacher_weights`` (``FILE`` or ``pretrained``; library sources only).
        size: ``kd.teacher_size`` (0: the source's own).
        norm: ``kd.teacher_norm`` as ``(mean, std)`` (None: the source's own).
        class_map: ``kd.class_map`` (``""``, ``auto`` or a file).
        download: consent to fetch ``pretrained`` weights that are not cached (``data.download``).
    """

    source: str
    ref: str
    weights: str = ""
    size: int = 0
    norm: Norm | None = None
    class_map: str = ""
    download: bool = field(default=False, compare=False)

    @property
    def text(self) -> str:
        """The ``kd.teacher`` value."""
        return self.ref if self.source == "checkpoint" else f"{self.source}:{self.ref}"


def parse_teacher(spec: str | Path | TeacherSpec, **options: Any) -> TeacherSpec:
    """The :class:`TeacherSpec` of a ``kd.teacher`` value: ``<source>:<ref>`` names a registered source, anything
    else is the path of an augkd run checkpoint (source ``checkpoint``); ``options`` fill the other fields. A
    library teacher may carry its weight file: ``timm:resnet50@resnet50.safetensors`` is ``timm:resnet50`` with
    ``kd.teacher_weights=resnet50.safetensors``.

    Raises:
        TeacherError: ``NAME@`` without a file, or a file that differs from ``kd.teacher_weights``.
    """
    if isinstance(spec, TeacherSpec):
        return replace(spec, **options) if options else spec
    source, sep, ref = str(spec).partition(":")
    if not (sep and source in TEACHER_SOURCES and source != "checkpoint"):
        source, ref = "checkpoint", str(spec)
    elif "@" in ref:  # timm:NAME@FILE: the network and its weight file in one value
        ref, _, weights = ref.partition("@")
        given = options.get("weights")
        if not ref or not weights:
            raise TeacherError(f"kd.teacher={spec}: expected {source}:NAME@FILE (or kd.teacher_weights=FILE)")
        if given and given != weights:
            raise TeacherError(
                f"kd.teacher={spec} names the weights {weights!r}, kd.teacher_weights {given!r}: give one"
            )
        options = {**options, "weights": weights}
    return TeacherSpec(source, ref, **options)


# ----------------------------------------------------------------------------------------------------------------
# Class maps


def _read_class_map(path: Path) -> dict[str, list[str]]:
    """``student class -> [teacher class, ...]`` from a JSON object or a text file of ``student teacher...`` lines."""
    if not path.is_file():
        raise TeacherError(f"kd.class_map: file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TeacherError(f"kd.class_map: {path} is not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise TeacherError(f"kd.class_map: {path} must hold a JSON object (student class -> teacher class)")
        return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in raw.items()}
    mapping: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) < 2:
            raise TeacherError(f"kd.class_map: {path}:{number}: expected 'student_class teacher_class ...'")
        mapping.setdefault(words[0], []).extend(words[1:])
    return mapping


def class_map_groups(
    class_map: str, student_classes: Sequence[str], teacher_labels: Sequence[str] | None, teacher_classes: int
) -> list[list[int]] | None:
    """For each student class, the teacher's class indices it maps to (None: no map, the classes are shared).

    Args:
        class_map: ``""`` (none), ``auto`` (the student's class names are the teacher's labels, e.g. ImageNet
            WordNet ids) or a file (:func:`_read_class_map`: each teacher class an index or a label).
        student_classes: the student's class names in label order.
        teacher_labels: the teacher's class labels (None: unnamed).
        teacher_classes: the teacher's number of outputs.

    Raises:
        TeacherError: a student class without a teacher class (all of them listed), an unknown teacher class, or
            no map for a teacher of another class count.
    """
    if not class_map:
        if teacher_classes != len(student_classes):
            raise TeacherError(
                f"the teacher predicts {teacher_classes} classes but the student's data has {len(student_classes)}; "
                "set kd.class_map=auto (class folders named by ImageNet WordNet ids) or kd.class_map=FILE"
            )
        return None
    labels = list(teacher_labels or [])
    position = {label: i for i, label in enumerate(labels)}
    if class_map == "auto":
        if not labels:
            raise TeacherError(
                "kd.class_map=auto needs a teacher whose classes have names (an ImageNet-1k head or an augkd "
                "checkpoint); give the map as kd.class_map=FILE"
            )
        mapping = {name: [name] for name in student_classes if name in position}
    else:
        mapping = _read_class_map(Path(class_map).expanduser())
    unmapped = [name for name in student_classes if not mapping.get(name)]
    if unmapped:
        where = "among the teacher's class labels" if class_map == "auto" else f"in {class_map}"
        raise TeacherError(f"kd.class_map: no teacher class {where} for student classes {', '.join(unmapped)}")
    groups = []
    for name in student_classes:
        group = []
        for entry in mapping[name]:
            index = int(entry) if entry.isdigit() else position.get(entry, -1)
            if not 0 <= index < teacher_classes:
                raise TeacherError(f"kd.class_map: teacher class {entry!r} (for {name!r}) is not one of the teacher's")
            group.append(index)
        groups.append(group)
    return groups


def _student_classes(classes: int | Sequence[str], class_map: str) -> list[str]:
    if isinstance(classes, int):
        if class_map:
            raise TeacherError("kd.class_map needs the student's class names")
        return [str(i) for i in range(classes)]
    return list(classes)


# ----------------------------------------------------------------------------------------------------------------
# Sources


def _load_checkpoint_teacher(
    spec: TeacherSpec,
    classes: int | Sequence[str],
    device: torch.device | str,
    student_norm: tuple[Sequence[float], Sequence[float]] | None,
    channels_last: bool,
    checkpoint: RunCheckpoint | None = None,
) -> Teacher:
    ckpt = checkpoint or read_run_checkpoint(spec.ref)
    names = _student_classes(classes, spec.class_map)
    if not spec.class_map and ckpt.num_classes != len(names):
        raise TeacherError(
            f"teacher {spec.ref} predicts {ckpt.num_classes} classes but the student's data has {len(names)}; "
            "a teacher must be trained on the same classes (or set kd.class_map)"
        )
    problem = None if spec.class_map or isinstance(classes, int) else class_mismatch(ckpt.classes, names)
    if problem:  # the same count under other names is another label space: its top-K would be wrong labels
        raise TeacherError(
            f"teacher {spec.ref} was trained on other classes than the student's data ({problem}); "
            "set kd.class_map to map them"
        )
    groups = class_map_groups(spec.class_map, names, ckpt.classes, ckpt.num_classes)
    model = ckpt.build_model().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Teacher(model, student_norm, spec.norm or ckpt.normalize, spec.size or None, groups).to(device)


def _options_digest(spec: TeacherSpec, extra: dict[str, Any]) -> str:
    class_map: Any = spec.class_map
    if class_map not in ("", "auto"):
        path = Path(class_map).expanduser()
        class_map = {"file_sha256": file_sha256(path) if path.is_file() else None}  # its content, not its name
    entries = {"size": spec.size, "norm": spec.norm, "class_map": class_map, **extra}
    return hashlib.sha256(json.dumps(entries, sort_keys=True, default=list).encode()).hexdigest()


def _checkpoint_fingerprint(spec: TeacherSpec) -> str:
    digest = file_sha256(spec.ref)
    if not (spec.size or spec.norm or spec.class_map):
        return digest  # as before these options existed: caches built from a plain checkpoint teacher stay valid
    return hashlib.sha256(f"{digest}:{_options_digest(spec, {})}".encode()).hexdigest()


def _checkpoint_missing(spec: TeacherSpec) -> str | None:
    return None if Path(spec.ref).is_file() else f"teacher checkpoint not found: {spec.ref}"


def _probe(spec: TeacherSpec) -> nn.Module:
    """The network with its library's default head, on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return create_external(spec.source, spec.ref)


def describe_teacher(spec: TeacherSpec) -> dict[str, Any]:
    """What decides a library teacher's outputs, resolved: weight file, input size, normalization, class map."""
    if spec.source == "checkpoint":
        return {"source": "checkpoint", "path": spec.ref, "size": spec.size or None, "norm": spec.norm}
    library = EXTERNAL_SOURCES[spec.source]
    if not spec.weights:
        raise TeacherError(
            f"kd.teacher={spec.text} needs kd.teacher_weights=FILE or kd.teacher_weights=pretrained "
            "(a teacher with random weights teaches nothing)"
        )
    path = None if spec.weights == RANDOM_WEIGHTS else resolve_weights(spec.text, spec.weights, download=spec.download)
    prep = library.preprocessing(spec.ref, _probe(spec))
    return {
        "source": spec.source,
        "name": spec.ref,
        "weights": str(path) if path else RANDOM_WEIGHTS,
        "size": spec.size or prep.input_size,
        "norm": spec.norm or (prep.mean, prep.std),
        "class_map": spec.class_map,
    }


def _load_external_teacher(
    spec: TeacherSpec,
    classes: int | Sequence[str],
    device: torch.device | str,
    student_norm: tuple[Sequence[float], Sequence[float]] | None,
    channels_last: bool,
    checkpoint: RunCheckpoint | None = None,
) -> Teacher:
    info = describe_teacher(spec)
    state = None if info["weights"] == RANDOM_WEIGHTS else read_weight_file(info["weights"])
    head = classifier_keys(_probe(spec))
    outputs = int(state[head[0]].shape[0]) if state is not None and head and head[0] in state else None
    model = create_external(spec.source, spec.ref, num_classes=outputs)
    if state is not None:
        load_weights(model, state, f"kd.teacher_weights={info['weights']} into {spec.text}")
    head = classifier_keys(model)
    outputs = int(model.state_dict()[head[0]].shape[0]) if head else int(getattr(model, "num_classes", 0))
    labels = EXTERNAL_SOURCES[spec.source].labels(model)
    groups = class_map_groups(spec.class_map, _student_classes(classes, spec.class_map), labels, outputs)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Teacher(model, student_norm, info["norm"], info["size"], groups).to(device)


def _external_fingerprint(spec: TeacherSpec) -> str:
    info = describe_teacher(spec)
    weights, _ = info.pop("weights"), info.pop("class_map")  # the class map enters by its file's digest
    info["weights_sha256"] = file_sha256(weights) if weights != RANDOM_WEIGHTS else RANDOM_WEIGHTS
    return _options_digest(spec, info)  # the resolved size and normalization replace the spec's own


def _external_missing(spec: TeacherSpec) -> str | None:
    try:
        describe_teacher(spec)
    except WeightsError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class TeacherSource:
    """Where teachers of one kind come from.

    Attributes:
        load: ``(spec, classes, device, student_norm, channels_last, checkpoint=None) -> Teacher``; ``classes``
            is the student's class names (or their number, without a class map).
        fingerprint: ``spec -> str`` that changes whenever the teacher's outputs may (a teacher cache's key): the
            weights' digest and every option that changes the answer (size, normalization, class map).
        missing: ``spec -> why its weights are not here, or None`` (dry runs put a stand-in in its place).
    """

    load: Callable[..., Teacher]
    fingerprint: Callable[[TeacherSpec], str]
    missing: Callable[[TeacherSpec], str | None]


#: ``kd.teacher`` values: ``<source>:<ref>`` for a registered source, else a path to an augkd run checkpoint.
TEACHER_SOURCES: Registry[TeacherSource] = Registry(
    "teacher source",
    {
        "checkpoint": TeacherSource(_load_checkpoint_teacher, _checkpoint_fingerprint, _checkpoint_missing),
        "timm": TeacherSource(_load_external_teacher, _external_fingerprint, _external_missing),
        "torchvision": TeacherSource(_load_external_teacher, _external_fingerprint, _external_missing),
    },
)


def teacher_fingerprint(spec: str | Path | TeacherSpec) -> str:
    """What identifies the teacher ``spec`` names: a checkpoint's sha256, or for a library network the digest of
    its weight file, source, name, input size, normalization and class map."""
    spec = parse_teacher(spec)
    return TEACHER_SOURCES[spec.source].fingerprint(spec)


def teacher_missing(spec: str | Path | TeacherSpec) -> str | None:
    """Why the teacher ``spec`` names cannot be loaded yet (no checkpoint, no weight file), or None."""
    spec = parse_teacher(spec)
    return TEACHER_SOURCES[spec.source].missing(spec)


def load_teacher(
    spec: str | Path | TeacherSpec,
    classes: int | Sequence[str],
    device: torch.device | str = "cpu",
    student_norm: tuple[Sequence[float], Sequence[float]] | None = None,
    channels_last: bool = False,
    checkpoint: RunCheckpoint | None = None,
) -> Teacher:
    """Load the teacher ``spec`` names (an augkd run checkpoint, or ``<source>:<ref>``) for a student.

    Args:
        spec: a ``kd.teacher`` value or a :class:`TeacherSpec` (with the ``kd.teacher_*`` options).
        classes: the student's class names in label order (a class map needs them), or their number.
        device, student_norm, channels_last: where it runs and what its inputs were normalized with.
        checkpoint: the run checkpoint already read from ``spec`` (by
            :func:`~augkd.models.checkpoint.read_run_checkpoint`), so a caller that needs its entries too reads it
            once.

    Raises:
        CheckpointError: missing, corrupt or unsafe checkpoint, not an augkd run checkpoint, weights that do not
            fit.
        WeightsError: a library teacher's weight file missing, unsafe or not fitting the network.
        TeacherError: a class count that differs from the student's without a class map, or a class map that
            leaves student classes out.
    """
    spec = parse_teacher(spec)
    return TEACHER_SOURCES[spec.source].load(spec, classes, device, student_norm, channels_last, checkpoint)
