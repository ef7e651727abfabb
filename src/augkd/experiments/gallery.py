"""Galleries of augmentation ops across levels, like the paper's Fig. 3.

One row per op (each on a different real image) and one column per level, plus a last row that applies two
ops one after the other at the same level, which is what RandAugment with N=2 does to a training image. Signed
ops are shown in their positive direction and cutout is centred, so a gallery is deterministic.

:func:`make_mix_gallery` shows what a run's training batches look like after Mixup/CutMix (its whole pipeline:
crop, policy, Cutout, mixing), each image titled with the classes its soft target weighs and their weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from augkd.augment.ops import apply_op
from augkd.augment.policies import GEOMETRIC_OPS
from augkd.augment.spec import build_policy
from augkd.data import DeviceLoader, InMemoryDataset
from augkd.data.pipeline import Normalize
from augkd.io import out_folder
from augkd.train.build import build_pipeline
from augkd.train.config import TrainConfig

__all__ = ["make_gallery", "make_mix_gallery", "mixed_training_images"]


def _resolve_ops(ops: str | Sequence[str], space: str | None) -> tuple[list[str], str, str]:
    """Row ops, level space and a title from a spec string or an explicit op list."""
    if isinstance(ops, str):
        policy = build_policy(ops)
        names = [n for n in policy.op_names if n != "identity"]
        if not names:
            raise ValueError(f"policy {ops!r} has no ops to show")
        return names, space or policy.space, policy.spec
    names = list(ops)
    if not names:
        raise ValueError("make_gallery needs at least one op")
    default_space = "geometric" if all(n in GEOMETRIC_OPS for n in names) else "autoaugment"
    return names, space or default_space, ", ".join(names)


def _row(image: torch.Tensor, names: Sequence[str], levels: torch.Tensor, space: str, fill: int) -> torch.Tensor:
    """``image`` under ops ``names`` applied in turn, once per level: (len(levels), C, H, W)."""
    batch = image.unsqueeze(0).repeat(len(levels), 1, 1, 1)
    h, w = image.shape[-2:]
    centers = torch.tensor([[h // 2, w // 2]], dtype=torch.int64).repeat(len(levels), 1)
    for name in names:
        batch = apply_op(batch, name, levels, fill, space=space, centers=centers if name == "cutout" else None)
    return batch


def make_gallery(
    images: torch.Tensor,
    ops: str | Sequence[str],
    out_png: str | Path,
    levels: Iterable[float] = range(0, 11, 2),
    space: str | None = None,
    *,
    pair: Sequence[str] | None = None,
    fill: int = 128,
    cell_inches: float = 1.1,
) -> Path:
    """Write a PNG grid of ``images`` under each op (rows) at each level (columns), plus a row of two ops.

    Args:
        images: uint8 images (n, 3, H, W); row ``i`` shows image ``i % n``.
        ops: a policy spec (its op list is shown, e.g. ``"geo-n2-m5"``) or op names (``["translate_x", "cutout"]``).
        out_png: the file to write; parent folders are created.
        levels: the levels of the columns.
        space: ``"autoaugment"`` or ``"geometric"``; default: the spec's, or geometric when every op is one of
            the paper's geometric ops.
        pair: the ops of the last row, applied one after the other (default: the first and the last row's op);
            ``()`` leaves the row out.
        fill: grey level of uncovered pixels and cutout.
        cell_inches: size of one cell in the figure.

    Returns:
        The path of the PNG.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be uint8 (n, C, H, W) with n >= 1, got {images.dtype} {tuple(images.shape)}")
    names, space, title = _resolve_ops(ops, space)
    level_list = [float(x) for x in levels]
    if not level_list:
        raise ValueError("make_gallery needs at least one level")
    level_t = torch.tensor(level_list, dtype=torch.float32)
    pair = [names[0], names[-1]] if pair is None else list(pair)
    rows = [([name], _row(images[i % len(images)], [name], level_t, space, fill)) for i, name in enumerate(names)]
    if len(pair) >= 2:
        rows.append((pair, _row(images[len(names) % len(images)], pair, level_t, space, fill)))

    from matplotlib.figure import Figure  # optional dependency (the "plot" extra); no pyplot global state

    fig = Figure(figsize=(cell_inches * len(level_list) + 1.2, cell_inches * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), len(level_list), squeeze=False)
    for r, (row_ops, row_images) in enumerate(rows):
        for c, level in enumerate(level_list):
            ax = axes[r][c]
            ax.imshow(row_images[c].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"M={level:g}", fontsize=9)
            if c == 0:
                ax.set_ylabel(" +\n".join(row_ops), fontsize=8)
    fig.suptitle(f"{title} ({space} levels)", fontsize=10)
    out = Path(out_png)
    out_folder(out.parent)
    fig.savefig(out, dpi=100)
    return out


def mixed_training_images(
    cfg: TrainConfig, train_set: InMemoryDataset, n: int, epoch: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training images of ``epoch`` as the run ``cfg`` trains on them (every stage of its pipeline,
    Mixup/CutMix included): uint8 ``(n, 3, H, W)`` and their soft targets ``(n, C)``.

    Raises:
        ValueError: the config mixes nothing (``augment.mixup`` and ``augment.cutmix`` are 0).
    """
    if not cfg.augment.mixes:
        raise ValueError("a mix gallery needs augment.mixup=ALPHA and/or augment.cutmix=ALPHA")
    identity = Normalize((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))  # x * 1: the uint8 values as floats
    pipeline = build_pipeline(cfg, identity)
    loader = DeviceLoader(train_set, min(n, len(train_set)), shuffle=True, seed=cfg.stream_seed)
    batch = next(iter(pipeline.batches(loader, epoch)))
    targets = batch.targets
    if targets is None:  # an epoch without mixing (augment.off_last_epochs)
        targets = torch.nn.functional.one_hot(batch.labels, train_set.num_classes).float()
    return batch.images.round().to(torch.uint8), targets


def make_mix_gallery(
    images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], out_png: str | Path, columns: int = 4
) -> Path:
    """Write a PNG grid of mixed ``images``, each titled with the (at most two) classes of its soft target and
    their weights, e.g. ``cat 0.62 + dog 0.38``.

    Returns:
        The path of the PNG.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) == 0 or targets.shape[0] != len(images):
        raise ValueError(f"images must be uint8 (n, C, H, W) with n >= 1 and one target row each; got {images.shape}")
    from matplotlib.figure import Figure

    rows = -(-len(images) // columns)
    fig = Figure(figsize=(1.8 * columns, 1.9 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(images):
            ax.set_axis_off()
            continue
        ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        weights, idx = targets[i].topk(min(2, targets.shape[1]))
        parts = [f"{classes[c]} {w:.2f}" for w, c in zip(weights.tolist(), idx.tolist()) if w > 0.005]
        ax.set_title(" + ".join(parts), fontsize=8)
    fig.suptitle("training images after Mixup / CutMix (class weights of the soft target)", fontsize=9)
    out = Path(out_png)
    out_folder(out.parent)
    fig.savefig(out, dpi=100)
    return out
