"""Augmentation policies: AutoAugment, RandAugment, the paper's geometric space and TrivialAugment-wide.

A policy only *samples*: for every image it draws which ops to run, at which signed level, whether each op fires
and where a cutout goes. Every draw is a pure function of ``(seed, epoch, dataset index)`` through
:mod:`augkd.augment.rng`, so the same image in the same epoch gets the same augmentation whatever the batch size,
batch order or device. The sampled parameters are plain tensors (see :meth:`Policy.sample`) that can be printed
(:meth:`Policy.describe`), stored and replayed (``forward(..., params=params)``). All policies share one apply
path (:meth:`Policy.apply`), which groups the images of a batch by op and calls
:func:`augkd.augment.ops.apply_op` once per op and step.

Policies are data: AutoAugment tables are tuples of sub-policies of ``(op name, probability, level)`` and
RandAugment-style policies are an op list plus a magnitude. Levels follow AutoAugment's 0-10 scale (RandAugment
may go to 30); the op layer maps a level to each op's argument. Build policies from spec strings with
:func:`augkd.augment.spec.build_policy`.

Random slot layout (never change it: stored parameters and soft-label caches depend on it):

- ``SLOTS["subpolicy"]`` (100): AutoAugment's choice of sub-policy, one per image.
- ``SLOTS["policy_base"] + step * STEP_STRIDE + STEP_KINDS[kind]``: the draws of op step ``step`` (0-based),
  with ``kind`` in :data:`STEP_KINDS` (op choice, apply probability, sign, two magnitude-noise uniforms, cutout
  centre y and x, level bin).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from augkd.augment import kernel, rng
from augkd.augment.base import BaseAugment
from augkd.augment.ops import SPACES, TRANSLATE_FRACTION, apply_op

__all__ = [
    "AUTOAUGMENT_POLICIES",
    "GEOMETRIC_OPS",
    "RANDAUGMENT_OPS",
    "STEP_KINDS",
    "STEP_STRIDE",
    "TRIVIALAUGMENT_WIDE_OPS",
    "AutoAugment",
    "NoAugment",
    "Policy",
    "RandAugment",
    "TrivialAugmentWide",
    "step_slot",
]

SubPolicy = tuple[tuple[str, float, float], ...]

#: Slot offsets of the draws made for one op step (added to ``policy_base + step * STEP_STRIDE``).
STEP_KINDS: dict[str, int] = {
    "op": 0,
    "apply": 1,
    "sign": 2,
    "noise_a": 3,
    "noise_b": 4,
    "center_y": 5,
    "center_x": 6,
    "level": 7,
}
#: Slots reserved per op step; also bounds the number of steps a policy may have.
STEP_STRIDE = 16
MAX_STEPS = 16

# AutoAugment policies (Cubuk et al., CVPR 2019, appendix), checked against torchvision's and timm's tables.
# Levels of invert / autocontrast / equalize are kept as printed in the paper although those ops ignore them.
AUTOAUGMENT_POLICIES: dict[str, tuple[SubPolicy, ...]] = {
    "cifar10": (
        (("invert", 0.1, 7), ("contrast", 0.2, 6)),
        (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
        (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
        (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
        (("autocontrast", 0.5, 8), ("equalize", 0.9, 2)),
        (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
        (("color", 0.4, 3), ("brightness", 0.6, 7)),
        (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
        (("equalize", 0.6, 5), ("equalize", 0.5, 1)),
        (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
        (("color", 0.7, 7), ("translate_x", 0.5, 8)),
        (("equalize", 0.3, 7), ("autocontrast", 0.4, 8)),
        (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)),
        (("brightness", 0.9, 6), ("color", 0.2, 8)),
        (("solarize", 0.5, 2), ("invert", 0.0, 3)),
        (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
        (("equalize", 0.2, 8), ("equalize", 0.6, 4)),
        (("color", 0.9, 9), ("equalize", 0.6, 6)),
        (("autocontrast", 0.8, 4), ("solarize", 0.2, 8)),
        (("brightness", 0.1, 3), ("color", 0.7, 0)),
        (("solarize", 0.4, 5), ("autocontrast", 0.9, 3)),
        (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
        (("autocontrast", 0.9, 2), ("solarize", 0.8, 3)),
        (("equalize", 0.8, 8), ("invert", 0.1, 3)),
        (("translate_y", 0.7, 9), ("autocontrast", 0.9, 1)),
    ),
    "imagenet": (
        (("posterize", 0.4, 8), ("rotate", 0.6, 9)),
        (("solarize", 0.6, 5), ("autocontrast", 0.6, 5)),
        (("equalize", 0.8, 8), ("equalize", 0.6, 3)),
        (("posterize", 0.6, 7), ("posterize", 0.6, 6)),
        (("equalize", 0.4, 7), ("solarize", 0.2, 4)),
        (("equalize", 0.4, 4), ("rotate", 0.8, 8)),
        (("solarize", 0.6, 3), ("equalize", 0.6, 7)),
        (("posterize", 0.8, 5), ("equalize", 1.0, 2)),
        (("rotate", 0.2, 3), ("solarize", 0.6, 8)),
        (("equalize", 0.6, 8), ("posterize", 0.4, 6)),
        (("rotate", 0.8, 8), ("color", 0.4, 0)),
        (("rotate", 0.4, 9), ("equalize", 0.6, 2)),
        (("equalize", 0.0, 7), ("equalize", 0.8, 8)),
        (("invert", 0.6, 4), ("equalize", 1.0, 8)),
        (("color", 0.6, 4), ("contrast", 1.0, 8)),
        (("rotate", 0.8, 8), ("color", 1.0, 2)),
        (("color", 0.8, 8), ("solarize", 0.8, 7)),
        (("sharpness", 0.4, 7), ("invert", 0.6, 8)),
        (("shear_x", 0.6, 5), ("equalize", 1.0, 9)),
        (("color", 0.4, 0), ("equalize", 0.6, 3)),
        (("equalize", 0.4, 7), ("solarize", 0.2, 4)),
        (("solarize", 0.6, 5), ("autocontrast", 0.6, 5)),
        (("invert", 0.6, 4), ("equalize", 1.0, 8)),
        (("color", 0.6, 4), ("contrast", 1.0, 8)),
        (("equalize", 0.8, 8), ("equalize", 0.6, 3)),
    ),
    "svhn": (
        (("shear_x", 0.9, 4), ("invert", 0.2, 3)),
        (("shear_y", 0.9, 8), ("invert", 0.7, 5)),
        (("equalize", 0.6, 5), ("solarize", 0.6, 6)),
        (("invert", 0.9, 3), ("equalize", 0.6, 3)),
        (("equalize", 0.6, 1), ("rotate", 0.9, 3)),
        (("shear_x", 0.9, 4), ("autocontrast", 0.8, 3)),
        (("shear_y", 0.9, 8), ("invert", 0.4, 5)),
        (("shear_y", 0.9, 5), ("solarize", 0.2, 6)),
        (("invert", 0.9, 6), ("autocontrast", 0.8, 1)),
        (("equalize", 0.6, 3), ("rotate", 0.9, 3)),
        (("shear_x", 0.9, 4), ("solarize", 0.3, 3)),
        (("shear_y", 0.8, 8), ("invert", 0.7, 4)),
        (("equalize", 0.9, 5), ("translate_y", 0.6, 6)),
        (("invert", 0.9, 4), ("equalize", 0.6, 7)),
        (("contrast", 0.3, 3), ("rotate", 0.8, 4)),
        (("invert", 0.8, 5), ("translate_y", 0.0, 2)),
        (("shear_y", 0.7, 6), ("solarize", 0.4, 8)),
        (("invert", 0.6, 4), ("rotate", 0.8, 4)),
        (("shear_y", 0.3, 7), ("translate_x", 0.9, 3)),
        (("shear_x", 0.1, 6), ("invert", 0.6, 5)),
        (("solarize", 0.7, 2), ("translate_y", 0.6, 7)),
        (("shear_y", 0.8, 4), ("invert", 0.8, 8)),
        (("shear_x", 0.7, 9), ("translate_y", 0.8, 3)),
        (("shear_y", 0.8, 5), ("autocontrast", 0.7, 3)),
        (("shear_x", 0.7, 2), ("invert", 0.1, 5)),
    ),
}

#: RandAugment's op list as in the reference implementation the paper trained with (TensorFlow EfficientNet's
#: ``distort_image_with_randaugment``), less ``solarize_add``, which the op layer does not have. Unlike
#: torchvision's list it has invert and cutout and no identity; unlike timm's it keeps cutout in the policy.
RANDAUGMENT_OPS: tuple[str, ...] = (
    "autocontrast",
    "equalize",
    "invert",
    "rotate",
    "posterize",
    "solarize",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "cutout",
)

#: The paper's own augment space (§4.1): geometric ops and cutout only, on the "geometric" level scale.
GEOMETRIC_OPS: tuple[str, ...] = ("shear_x", "shear_y", "translate_x", "translate_y", "cutout")

#: TrivialAugment-wide's ops (Müller & Hutter 2021; torchvision's ``TrivialAugmentWide``).
TRIVIALAUGMENT_WIDE_OPS: tuple[str, ...] = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)


def step_slot(step: int, kind: str) -> int:
    """The :mod:`~augkd.augment.rng` slot of draw ``kind`` (a key of :data:`STEP_KINDS`) at op step ``step``."""
    return rng.SLOTS["policy_base"] + step * STEP_STRIDE + STEP_KINDS[kind]


def _check_ops(names: Sequence[str], space: str) -> tuple[str, ...]:
    if space not in SPACES:
        raise ValueError(f"space must be one of {sorted(SPACES)}, got {space!r}")
    known = set(SPACES[space]) | {"identity"}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown augmentation op(s) {unknown} in the {space} space; expected names from {sorted(known)}"
        )
    return tuple(names)


def _is_signed(name: str, space: str) -> bool:
    return name != "identity" and SPACES[space][name].signed


def _as_rows(images: torch.Tensor) -> torch.Tensor:
    """A contiguous uint8 batch as one row per image, in the widest integer type that tiles the row.

    Gathering and scattering whole images is several times faster on 8-byte words than on bytes.
    """
    rows = images.view(images.shape[0], -1)
    for dtype in (torch.int64, torch.int32, torch.int16):
        size = dtype.itemsize
        if rows.shape[1] % size == 0 and images.storage_offset() % size == 0:
            return rows.view(dtype)
    return rows


def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = (int(s) for s in image_size)
    return h, w


class Policy(BaseAugment):
    """Base class: per-image parameter sampling (subclasses) plus the one batched apply path (here).

    Subclasses set :attr:`op_names` and :attr:`num_steps` and implement :meth:`_sample_steps`; signs, cutout
    centres and the parameter dict are assembled here so every policy draws them the same way.

    Args:
        op_names: the ops a parameter's ``op`` ids index into.
        num_steps: ops applied one after another per image (2 for AutoAugment and RandAugment N=2).
        image_size: default (H, W), or one int for square images, used when sampling without images.
        seed: run seed; the same (seed, epoch, index) always gives the same augmentation.
        fill: grey level for pixels uncovered by geometric ops and for cutout.
        space: level scale passed to the op layer: ``"autoaugment"`` or ``"geometric"`` (paper §4.1).
        spec: the spec string this policy was built from, for printing.
    """

    def __init__(
        self,
        op_names: Sequence[str],
        num_steps: int,
        *,
        image_size: int | Sequence[int] = 32,
        seed: int = 0,
        fill: int = 128,
        space: str = "autoaugment",
        spec: str = "",
    ) -> None:
        super().__init__(seed)
        if not 0 <= num_steps <= MAX_STEPS:
            raise ValueError(f"number of op steps must be in [0, {MAX_STEPS}], got {num_steps}")
        if not 0 <= fill <= 255:
            raise ValueError(f"fill must be a grey level in [0, 255], got {fill}")
        self.op_names = _check_ops(op_names, space)
        self.num_steps = num_steps
        self.image_size = _size_hw(image_size)
        self.fill = int(fill)
        self.space = space
        self.spec = spec
        self._identity_id = self.op_names.index("identity") if "identity" in self.op_names else -1
        self._cutout_id = self.op_names.index("cutout") if "cutout" in self.op_names else -1
        self.register_buffer(
            "_signed", torch.tensor([_is_signed(n, space) for n in self.op_names], dtype=torch.bool), persistent=False
        )

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, image_size={self.image_size}, seed={self.seed}, fill={self.fill}"

    # ---------------------------------------------------------------------------------------------- sampling
    def _uniform(self, index: torch.Tensor, epoch: int, step: int, kind: str) -> torch.Tensor:
        return rng.uniform(self.seed, epoch, index, step_slot(step, kind))

    def _randint(self, index: torch.Tensor, epoch: int, step: int, kind: str, high: int) -> torch.Tensor:
        return rng.randint(self.seed, epoch, index, step_slot(step, kind), high)

    def _keys(self, index: torch.Tensor, epoch: int, kind: str) -> torch.Tensor:
        """Keys of draw ``kind`` for every step at once: (num_steps, B)."""
        return rng.keys(self.seed, epoch, index, [step_slot(s, kind) for s in range(self.num_steps)])

    def _sample_steps(self, index: torch.Tensor, epoch: int, hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Draw ``op`` (B,N) int64, unsigned ``level`` (B,N) float32 and ``applied`` (B,N) bool, plus extras."""
        raise NotImplementedError

    def sample(
        self, indices: torch.Tensor, epoch: int, image_size: int | Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-image parameters for dataset ``indices`` in ``epoch``, on ``indices``' device.

        Args:
            indices: 1-D tensor of dataset indices (any integer dtype).
            epoch: epoch number (>= 0); each epoch draws fresh parameters.
            image_size: (H, W) of the images the parameters are for (cutout centres); default: the policy's.

        Returns:
            ``index`` (B,) int64; ``op`` (B,N) int64 ids into :attr:`op_names`; ``level`` (B,N) float32 signed
            levels (negative = the opposite direction of a signed op); ``applied`` (B,N) bool; ``center``
            (B,N,2) int64 cutout centres (y, x) in pixels (zeros for policies without cutout); AutoAugment adds
            ``subpolicy`` (B,) int64.
        """
        indices = torch.as_tensor(indices)
        if indices.ndim != 1 or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ValueError(
                f"indices must be a 1-D integer tensor, got {indices.dtype} of shape {tuple(indices.shape)}"
            )
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        index = indices.to(torch.int64)
        h, w = self.image_size if image_size is None else _size_hw(image_size)
        params = self._sample_steps(index, epoch, (h, w))
        op, level = params["op"], params["level"]
        signed = self._signed.to(op.device)[op] if op.numel() else torch.zeros_like(op, dtype=torch.bool)
        center = torch.zeros(index.shape[0], self.num_steps, 2, dtype=torch.int64, device=index.device)
        if self.num_steps:
            # One hash pass for every step's draws: (num_steps, B) keys per kind, the same numbers as one by one.
            steps = range(self.num_steps)
            negative = rng.key_to_uniform(self._keys(index, epoch, "sign")).t() < 0.5
            level.copy_(torch.where(signed & negative, -level, level))
            if self._cutout_id >= 0:  # policies without cutout keep zeros and save the draws
                slots = [step_slot(s, k) for k in ("center_y", "center_x") for s in steps]
                k = rng.keys(self.seed, epoch, index, slots).view(2, self.num_steps, -1)
                center[:, :, 0] = rng.key_to_randint(k[0], h).t()
                center[:, :, 1] = rng.key_to_randint(k[1], w).t()
        params["center"] = center
        params["index"] = index
        return params

    def _empty_steps(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        b, n, dev = index.shape[0], self.num_steps, index.device
        return {
            "op": torch.zeros(b, n, dtype=torch.int64, device=dev),
            "level": torch.zeros(b, n, dtype=torch.float32, device=dev),
            "applied": torch.ones(b, n, dtype=torch.bool, device=dev),
        }

    # ---------------------------------------------------------------------------------------------- applying
    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply sampled ``params`` to ``images``, one :func:`apply_op` call per (step, op) present in the batch.

        Each step stably sorts the batch by op id (images whose op is skipped or identity go last, untouched) with
        one gather, so each op's images form one contiguous slice; every op runs once on its slice and its result
        is written back into that slice. Steps compose their sorts (the next step sorts the already sorted batch),
        and one final gather restores the input order. The input is never modified and is returned as is when no
        op fires.

        On the CPU, RGB batches take the fused C kernel instead (:mod:`augkd.augment.kernel`): the same bytes,
        one call for the whole batch, and always a new tensor.
        """
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (B, C, H, W), got {images.dtype} of shape {tuple(images.shape)}")
        op, level, applied = params["op"], params["level"], params["applied"]
        if op.shape[0] != images.shape[0] or op.shape[1] != self.num_steps:
            raise ValueError(
                f"params are for {tuple(op.shape)} (batch, steps) but the batch has {images.shape[0]} images and "
                f"the policy {self.num_steps} steps"
            )
        images = images.contiguous()
        if self.num_steps == 0 or images.shape[0] == 0:
            return images
        device = images.device
        num_ops = len(self.op_names)
        op, level, applied = op.to(device), level.to(device), applied.to(device)
        # Sort key per (image, step): the op id, or num_ops (sorted last, left alone) when nothing happens.
        active = applied if self._identity_id < 0 else applied & (op != self._identity_id)
        if kernel.supports(images, self.op_names):
            center = params["center"].to(device)
            return kernel.apply_steps(images, self.op_names, self.space, op, level, active, center, self.fill)
        keys = torch.where(active, op, num_ops)
        center = params["center"].to(device)
        shape = images.shape
        # Group sizes do not depend on the order, so one host sync gives every step's (num_ops + 1) counts.
        offsets = torch.arange(self.num_steps, device=device) * (num_ops + 1)
        all_counts = torch.bincount((keys + offsets).flatten(), minlength=self.num_steps * (num_ops + 1))
        all_counts = all_counts.view(self.num_steps, num_ops + 1).tolist()
        rows = _as_rows(images)
        spare: torch.Tensor | None = None  # a buffer of this call that is free to be gathered into
        perm: torch.Tensor | None = None  # perm[i]: the input image at position i of the sorted batch
        for step, counts in enumerate(all_counts):
            if counts[num_ops] == shape[0]:
                continue  # nothing fires in this step
            key = keys[:, step] if perm is None else keys[:, step].index_select(0, perm)
            order = torch.argsort(key, stable=True)
            perm = order if perm is None else perm.index_select(0, order)
            if spare is None:
                # The first gather reads the input (never written) into a fresh buffer, viewed as wide words.
                gathered = _as_rows(rows.index_select(0, order).view(torch.uint8).view(shape))
            else:
                gathered = torch.index_select(rows, 0, order, out=spare)
            spare = None if rows.data_ptr() == images.data_ptr() else rows
            rows = gathered
            batch = rows.view(torch.uint8).view(shape)
            step_level = level[:, step].index_select(0, perm)
            start = 0
            for op_id in range(num_ops):
                count = counts[op_id]
                if count == 0:
                    continue
                part = slice(start, start + count)
                start += count
                centers = center[perm[part], step] if op_id == self._cutout_id else None
                result = apply_op(
                    batch[part], self.op_names[op_id], step_level[part], self.fill, space=self.space, centers=centers
                )
                batch[part] = result
        if perm is None:
            return images
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(shape[0], device=device)
        out = rows.index_select(0, inverse) if spare is None else torch.index_select(rows, 0, inverse, out=spare)
        return out.view(torch.uint8).view(shape)

    # ---------------------------------------------------------------------------------------------- reading
    def describe(self, params: dict[str, torch.Tensor]) -> list[str]:
        """One line per image naming what was (or was not) applied, e.g. ``"#17: rotate(-9.00), cutout(9.00 @ 3,20)"``.

        Skipped ops are shown as ``(name skipped)``; AutoAugment lines name the sub-policy.
        """
        op = params["op"].cpu().tolist()
        level = params["level"].cpu().tolist()
        applied = params["applied"].cpu().tolist()
        center = params["center"].cpu().tolist()
        index = params["index"].cpu().tolist() if "index" in params else list(range(len(op)))
        sub = params["subpolicy"].cpu().tolist() if "subpolicy" in params else None
        lines = []
        for i in range(len(op)):
            parts = []
            for step in range(len(op[i])):
                name = self.op_names[op[i][step]]
                if not applied[i][step]:
                    parts.append(f"({name} skipped)")
                elif name == "cutout":
                    cy, cx = center[i][step]
                    parts.append(f"cutout({level[i][step]:.2f} @ {cy},{cx})")
                elif _is_signed(name, self.space):
                    parts.append(f"{name}({level[i][step]:+.2f})")
                else:
                    parts.append(f"{name}({level[i][step]:.2f})")
            head = f"#{index[i]}" + (f" sub-policy {sub[i]}" if sub is not None else "")
            lines.append(f"{head}: " + (", ".join(parts) if parts else "no augmentation"))
        return lines


class NoAugment(Policy):
    """The ``none`` policy: returns the images unchanged (and samples empty parameters)."""

    def __init__(self, *, image_size: int | Sequence[int] = 32, seed: int = 0, fill: int = 128) -> None:
        super().__init__((), 0, image_size=image_size, seed=seed, fill=fill, spec="none")

    def _sample_steps(self, index: torch.Tensor, epoch: int, hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        return self._empty_steps(index)


class AutoAugment(Policy):
    """AutoAugment: per image one sub-policy uniformly at random, whose ops each fire with their own probability.

    Args:
        sub_policies: the table, e.g. ``AUTOAUGMENT_POLICIES["cifar10"]``: sub-policies of equal length made of
            ``(op name, probability, level)``.
        image_size, seed, fill, spec: as for :class:`Policy`.
    """

    def __init__(
        self,
        sub_policies: Sequence[Sequence[tuple[str, float, float]]],
        *,
        image_size: int | Sequence[int] = 32,
        seed: int = 0,
        fill: int = 128,
        spec: str = "",
    ) -> None:
        lengths = {len(sp) for sp in sub_policies}
        if len(sub_policies) == 0 or len(lengths) != 1:
            raise ValueError(f"AutoAugment needs a non-empty table of equal-length sub-policies, got lengths {lengths}")
        names = sorted({name for sp in sub_policies for name, _, _ in sp})
        super().__init__(names, lengths.pop(), image_size=image_size, seed=seed, fill=fill, spec=spec)
        for sp in sub_policies:
            for name, prob, level in sp:
                if not 0.0 <= prob <= 1.0 or level < 0:
                    raise ValueError(f"bad sub-policy entry {(name, prob, level)}: need prob in [0, 1], level >= 0")
        self.sub_policies = tuple(tuple(sp) for sp in sub_policies)
        ids = [[self.op_names.index(name) for name, _, _ in sp] for sp in sub_policies]
        self.register_buffer("_table_op", torch.tensor(ids, dtype=torch.int64), persistent=False)
        probs = [[p for _, p, _ in sp] for sp in sub_policies]
        self.register_buffer("_table_prob", torch.tensor(probs, dtype=torch.float32), persistent=False)
        levels = [[lv for _, _, lv in sp] for sp in sub_policies]
        self.register_buffer("_table_level", torch.tensor(levels, dtype=torch.float32), persistent=False)

    def _sample_steps(self, index: torch.Tensor, epoch: int, hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        dev = index.device
        sub = rng.randint(self.seed, epoch, index, rng.SLOTS["subpolicy"], len(self.sub_policies))
        prob = self._table_prob.to(dev)[sub]
        applied = torch.stack(
            [self._uniform(index, epoch, step, "apply") < prob[:, step] for step in range(self.num_steps)], dim=1
        )
        return {
            "op": self._table_op.to(dev)[sub],
            "level": self._table_level.to(dev)[sub],  # a fresh tensor (advanced indexing), safe to sign in place
            "applied": applied,
            "subpolicy": sub,
        }


class RandAugment(Policy):
    """RandAugment: per image ``num_ops`` ops drawn uniformly (with replacement), all at magnitude ``magnitude``.

    Args:
        num_ops: N, ops applied one after another.
        magnitude: M, the level of every op (0-30 on the AutoAugment scale, 0-10 on the geometric one).
        ops: the op list to draw from.
        magnitude_std: std of gaussian noise added to M per op draw (timm's ``mstd``); ``inf`` draws the level
            uniformly from [0, M] instead. Noisy levels are clamped to [0, ``magnitude_max``].
        magnitude_max: the clamp for noisy levels (default: 30, or 10 in the geometric space).
        prob: probability that each op step fires (1.0 = always, as in the RandAugment paper).
        space: ``"autoaugment"`` or ``"geometric"``.
        image_size, seed, fill, spec: as for :class:`Policy`.
    """

    def __init__(
        self,
        num_ops: int,
        magnitude: float,
        *,
        ops: Sequence[str] = RANDAUGMENT_OPS,
        magnitude_std: float = 0.0,
        magnitude_max: float | None = None,
        prob: float = 1.0,
        space: str = "autoaugment",
        image_size: int | Sequence[int] = 32,
        seed: int = 0,
        fill: int = 128,
        spec: str = "",
    ) -> None:
        if not ops:
            raise ValueError("RandAugment needs at least one op")
        super().__init__(ops, num_ops, image_size=image_size, seed=seed, fill=fill, space=space, spec=spec)
        level_cap = 10.0 if space == "geometric" else 30.0
        magnitude_max = level_cap if magnitude_max is None else float(magnitude_max)
        if not 0.0 <= magnitude_max <= level_cap:
            raise ValueError(f"magnitude_max must be in [0, {level_cap:g}] in the {space} space, got {magnitude_max}")
        if not 0.0 <= magnitude <= magnitude_max:
            raise ValueError(f"magnitude must be in [0, {magnitude_max:g}] in the {space} space, got {magnitude}")
        if not magnitude_std >= 0.0:
            raise ValueError(f"magnitude_std must be >= 0 (or inf), got {magnitude_std}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.magnitude_max = magnitude_max
        self.prob = float(prob)

    def _levels(self, index: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """Level of one step: M, or M with noise (gaussian by Box-Muller on two counter-based uniforms)."""
        b, dev = index.shape[0], index.device
        if self.magnitude_std == 0.0:
            return torch.full((b,), self.magnitude, dtype=torch.float32, device=dev)
        u = self._uniform(index, epoch, step, "noise_a").double()
        if math.isinf(self.magnitude_std):
            level = u * self.magnitude
        else:
            v = self._uniform(index, epoch, step, "noise_b").double()
            gauss = torch.sqrt(-2.0 * torch.log1p(-u)) * torch.cos((2.0 * math.pi) * v)
            level = (self.magnitude + self.magnitude_std * gauss).clamp(0.0, self.magnitude_max)
        # Snap to 1/1024 so float rounding differences between devices almost never change a level.
        return (torch.round(level * 1024.0) / 1024.0).float()

    def _sample_steps(self, index: torch.Tensor, epoch: int, hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        params = self._empty_steps(index)
        if self.num_steps:
            params["op"].copy_(rng.key_to_randint(self._keys(index, epoch, "op"), len(self.op_names)).t())
        for step in range(self.num_steps):
            params["level"][:, step] = self._levels(index, epoch, step)
            if self.prob < 1.0:
                params["applied"][:, step] = self._uniform(index, epoch, step, "apply") < self.prob
        return params


# TrivialAugment-wide's ranges (torchvision's TrivialAugmentWide) as levels of the op layer's AutoAugment scale
# (see augkd.augment.ops): the level whose argument is the wide range's maximum.
_TA_WIDE_MAX_LEVEL: dict[str, float] = {
    "shear_x": 33.0,  # shear 0.99 = 0.03 * 33
    "shear_y": 33.0,
    "rotate": 45.0,  # 135 degrees = 3 * 45
    "brightness": 11.0,  # factor 1 +- 0.99 = 1 +- 0.09 * 11
    "color": 11.0,
    "contrast": 11.0,
    "sharpness": 11.0,
    "solarize": 10.0,  # threshold 0 (every value inverted)
    # 2 bits kept = 4 - floor(0.4 * 5). The op layer keeps 4 bits at level 0 (AutoAugment's CIFAR convention),
    # so TA-wide's 5-8 bit end is out of reach: its posterize here spans 4 to 2 bits instead of 8 to 2.
    "posterize": 5.0,
}
#: TrivialAugment-wide translates up to 32 pixels whatever the image size.
_TA_WIDE_TRANSLATE_PX = 32.0


class TrivialAugmentWide(Policy):
    """TrivialAugment-wide: per image one op drawn uniformly and one of 31 levels spread over that op's wide range.

    The wide ranges are torchvision's ``TrivialAugmentWide`` ones, expressed as levels of the op layer's
    AutoAugment scale (above 10 where the wide range is larger: rotate up to 135 degrees is level 45). Posterize
    is the exception: the op layer keeps 4 bits at level 0, so it spans 4 to 2 bits instead of 8 to 2.

    Args:
        num_bins: levels per op, from 0 to the op's wide maximum (31 as in torchvision).
        prob: probability that the op fires.
        image_size, seed, fill, spec: as for :class:`Policy`.
    """

    def __init__(
        self,
        *,
        num_bins: int = 31,
        prob: float = 1.0,
        image_size: int | Sequence[int] = 32,
        seed: int = 0,
        fill: int = 128,
        spec: str = "",
    ) -> None:
        super().__init__(TRIVIALAUGMENT_WIDE_OPS, 1, image_size=image_size, seed=seed, fill=fill, spec=spec)
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.num_bins = num_bins
        self.prob = float(prob)

    def max_levels(self, hw: tuple[int, int]) -> torch.Tensor:
        """The level reaching each op's wide maximum for images of size ``hw`` (0 for ops without a level)."""
        h, w = hw
        levels = []
        for name in self.op_names:
            if name in ("translate_x", "translate_y"):
                side = w if name == "translate_x" else h
                levels.append(10.0 * _TA_WIDE_TRANSLATE_PX / (TRANSLATE_FRACTION * side))
            else:
                levels.append(_TA_WIDE_MAX_LEVEL.get(name, 0.0))
        return torch.tensor(levels, dtype=torch.float32)

    def _sample_steps(self, index: torch.Tensor, epoch: int, hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        params = self._empty_steps(index)
        op = self._randint(index, epoch, 0, "op", len(self.op_names))
        level_bin = self._randint(index, epoch, 0, "level", self.num_bins)
        params["op"][:, 0] = op
        params["level"][:, 0] = self.max_levels(hw).to(index.device)[op] * (level_bin.float() / (self.num_bins - 1))
        if self.prob < 1.0:
            params["applied"][:, 0] = self._uniform(index, epoch, 0, "apply") < self.prob
        return params
