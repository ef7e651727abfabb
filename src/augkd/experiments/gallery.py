"""Galleries of augmentation ops across levels, like the paper's Fig. 3.

One row per op (each on a different real image) and one column per level, plus a last row that applies two
ops one after the other at the same level, which is what RandAugment with N=2 does to a training image. Signed
ops are shown in their positive direction and cutout is centred, so a gallery is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from augkd.augment.ops import apply_op
from augkd.augment.policies import GEOMETRIC_OPS
from augkd.augment.spec import build_policy
from augkd.io import out_folder

__all__ = ["make_gallery"]


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
