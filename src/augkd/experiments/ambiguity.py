"""Augment ambiguity: where augmentation destroys the meaning of an image, seen through a trained teacher.

The paper's Fig. 1 and 3 show augmented images whose label no longer fits. This module measures it: every op
of a policy is applied at every level to real held-out images, and a trained teacher reports

- ``p_true``: its mean probability of the true class,
- ``entropy``: its mean normalized entropy ``H / log C`` (0 = certain, 1 = uniform),
- ``agree``: how often (%) its top-1 prediction is still the label,

per op and per level, plus the same for the whole policy at each magnitude (``policy`` rows: what training
really feeds the student). ``augkd ambiguity`` writes the table (Markdown, CSV, JSON), a plot and a gallery of
the augmented images the teacher finds most ambiguous at the policy's own magnitude.

Signed ops (rotate, shear, translate) are measured half in each direction (alternating over the images), and
cutout rectangles are centred at seeded random positions, as in training.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from augkd.augment.ops import apply_op
from augkd.augment.spec import build_policy, parse_spec, with_magnitude
from augkd.io import atomic_write_text, out_folder

__all__ = ["ambiguity_report", "measure_ambiguity", "score"]

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def score(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image ``p_true``, normalized ``entropy``, ``agree`` (bool) and the teacher's ``pred`` from logits."""
    logp = torch.log_softmax(logits.float(), dim=1)
    p = logp.exp()
    entropy = -(p * logp).sum(1) / math.log(logits.shape[1])
    return {
        "p_true": p.gather(1, labels[:, None]).squeeze(1),
        "entropy": entropy,
        "agree": logp.argmax(1) == labels,
        "pred": logp.argmax(1),
        "p_pred": p.max(1).values,
    }


def _batched(fn: LogitsFn, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def _row(name: str, level: float, s: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {
        "op": name,
        "level": level,
        "p_true": s["p_true"].mean().item(),
        "entropy": s["entropy"].mean().item(),
        "agree": 100.0 * s["agree"].float().mean().item(),
        "n": int(s["p_true"].numel()),
    }


def _counted(logits_fn: LogitsFn, total: int, enabled: bool) -> tuple[LogitsFn, Any]:
    """``logits_fn`` that advances a progress bar (on stderr) by the images of every call, and the bar."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="ambiguity", unit="img", leave=False, file=sys.stderr, disable=not enabled)

    def fn(x: torch.Tensor) -> torch.Tensor:
        out = logits_fn(x)
        bar.update(len(x))
        return out

    return fn, bar


def measure_ambiguity(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: str,
    levels: Sequence[float] = tuple(range(11)),
    *,
    fill: int = 128,
    seed: int = 0,
    batch_size: int = 500,
    keep: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Teacher confidence on ``images`` under every op of ``spec`` at every level, and under the whole policy.

    Args:
        logits_fn: uint8 (B, 3, H, W) images -> (B, C) logits (normalization inside).
        images: uint8 (n, 3, H, W) held-out images; ``labels``: their (n,) int64 labels.
        spec: a policy spec; its ops and level space are measured (``ra``/``geo`` specs also at every level
            as a whole policy; other specs as they are).
        levels: the levels to measure (level 0 of every op is the clean image).
        fill: grey level of uncovered pixels.
        seed: seed of cutout centres and of the policy rows' draws.
        keep: also return per-image scores of the policy at the spec's own magnitude (for the gallery).
        progress: a progress bar on stderr over the images scored (``n`` per op and level, per policy level, and
            for the clean images).

    Returns:
        ``{"clean": row, "ops": [rows], "policy": [rows], "policy_levels": bool, "spec": spec, "space": ...,
        "per_image": {...}}``; each row holds ``op``, ``level``, ``p_true``, ``entropy``, ``agree`` (%), ``n``.
        ``policy_levels`` is False for a policy with magnitudes of its own (``aa-*``): its one ``policy`` row
        is the policy as it is, whatever its ``level`` field says, not the policy at a level of the ops'.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be uint8 (n, 3, H, W) with n >= 1, got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
    parsed = parse_spec(spec)
    policy = build_policy(spec, images.shape[-1], seed=seed, fill=fill)
    names = [n for n in policy.op_names if n != "identity"]
    if not names:
        raise ValueError(f"policy {spec!r} has no ops to measure")
    n, (h, w) = len(images), images.shape[-2:]
    policy_levels = list(levels) if parsed.family in ("ra", "geo") else [parsed.magnitude or 0.0]
    extra = keep and parsed.magnitude is not None and float(parsed.magnitude) not in map(float, policy_levels)
    passes = 1 + len(names) * len(levels) + len(policy_levels) + int(extra)
    logits_fn, bar = _counted(logits_fn, n * passes, progress)
    gen = torch.Generator().manual_seed(seed)
    centers = torch.stack([torch.randint(0, h, (n,), generator=gen), torch.randint(0, w, (n,), generator=gen)], 1)
    sign = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    clean = _row("clean", 0.0, score(_batched(logits_fn, images, batch_size), labels))
    rows = []
    for name in names:
        for level in levels:
            signed_levels = sign * float(level)
            aug = apply_op(
                images, name, signed_levels, fill, space=policy.space, centers=centers if name == "cutout" else None
            )
            rows.append(_row(name, float(level), score(_batched(logits_fn, aug, batch_size), labels)))
    policy_rows = []
    per_image: dict[str, Any] = {}
    indices = torch.arange(n)
    for level in policy_levels:
        level_spec = with_magnitude(spec, level) if parsed.family in ("ra", "geo") else spec
        try:
            p = build_policy(level_spec, w, seed=seed, fill=fill)
        except ValueError:
            continue  # a level outside this family's range (e.g. above 10 in the geometric space)
        params = p.sample(indices, 0, (h, w))
        aug = p(images, indices, 0, params=params)
        s = score(_batched(logits_fn, aug, batch_size), labels)
        policy_rows.append(_row(f"policy {level_spec}", float(level), s))
        if keep and (parsed.magnitude is None or float(level) == float(parsed.magnitude)):
            per_image = {"images": aug, "params": params, "scores": s, "spec": level_spec, "op_names": p.op_names}
    if keep and not per_image:  # the spec's own magnitude was not among the levels
        params = policy.sample(indices, 0, (h, w))
        aug = policy(images, indices, 0, params=params)
        s = score(_batched(logits_fn, aug, batch_size), labels)
        per_image = {"images": aug, "params": params, "scores": s, "spec": spec, "op_names": policy.op_names}
    bar.close()
    return {
        "spec": spec,
        "space": policy.space,
        "clean": clean,
        "ops": rows,
        "policy": policy_rows,
        "policy_levels": parsed.family in ("ra", "geo"),
        **({"per_image": per_image} if keep else {}),
    }


def _own_magnitudes(result: dict[str, Any]) -> dict[str, Any] | None:
    """The whole-policy row of a policy with magnitudes of its own (None for ``ra``/``geo`` specs)."""
    if result.get("policy_levels", True) or not result["policy"]:
        return None
    return result["policy"][0]


def _table_md(result: dict[str, Any], metric: str, title: str, fmt: str) -> list[str]:
    levels = sorted({r["level"] for r in result["ops"]})
    lines = [f"### {title}", "", "| op | " + " | ".join(f"L={lv:g}" for lv in levels) + " |"]
    lines.append("|" + "---|" * (len(levels) + 1))
    own = _own_magnitudes(result)
    by_op: dict[str, dict[float, dict[str, Any]]] = {}
    for r in result["ops"] + ([] if own else result["policy"]):
        by_op.setdefault(r["op"] if not r["op"].startswith("policy") else "policy (whole)", {})[r["level"]] = r
    for op, row in by_op.items():
        cells = [format(row[lv][metric], fmt) if lv in row else "-" for lv in levels]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    if own:  # not a level of the ops' space: its own line, not a cell of the L= columns
        lines += ["", f"The whole policy at its own magnitudes: {format(own[metric], fmt)}."]
    return [*lines, ""]


def ambiguity_report(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    spec: str,
    out: str | Path,
    levels: Sequence[float] = tuple(range(11)),
    *,
    fill: int = 128,
    seed: int = 0,
    gallery: int = 16,
    source: str = "",
    progress: bool = False,
) -> dict[str, Any]:
    """Measure (see :func:`measure_ambiguity`) and write ``ambiguity.md``/``.csv``/``.json``, ``ambiguity.png``
    and ``most_ambiguous.png`` (the ``gallery`` augmented images with the lowest ``p_true`` at the spec's own
    magnitude) into ``out``; returns the result with the written paths."""
    result = measure_ambiguity(
        logits_fn, images, labels, spec, levels, fill=fill, seed=seed, keep=gallery > 0, progress=progress
    )
    out = out_folder(out)
    per_image = result.pop("per_image", None)
    rows = [result["clean"], *result["ops"], *result["policy"]]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["op", "level", "p_true", "entropy", "agree", "n"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "ambiguity.csv", buf.getvalue())
    atomic_write_text(out / "ambiguity.json", json.dumps(result, indent=2) + "\n")
    clean = result["clean"]
    md = [
        f"# Augment ambiguity of `{spec}`",
        "",
        f"{clean['n']} held-out images{f' from {source}' if source else ''}; a trained teacher scores each op at "
        f"each level ({result['space']} level space; signed ops half in each direction). Clean images: "
        f"p(true) {clean['p_true']:.3f}, entropy {clean['entropy']:.3f}, agreement {clean['agree']:.1f}%.",
        "",
    ]
    md += _table_md(result, "agree", "Teacher top-1 agreement with the label (%)", ".1f")
    md += _table_md(result, "p_true", "Teacher probability of the true class", ".3f")
    md += _table_md(result, "entropy", "Teacher normalized entropy (0 certain, 1 uniform)", ".3f")
    written = {"markdown": out / "ambiguity.md", "csv": out / "ambiguity.csv", "json": out / "ambiguity.json"}
    written["plot"] = _plot(result, out / "ambiguity.png")
    if per_image:
        written["gallery"] = _gallery(per_image, labels, classes, gallery, out / "most_ambiguous.png")
        md += [f"![most ambiguous]({written['gallery'].name})", ""]
    md.insert(4, f"![ambiguity per op and level]({written['plot'].name})\n")
    atomic_write_text(written["markdown"], "\n".join(md))
    return {**result, "files": {k: str(v) for k, v in written.items()}}


def _plot(result: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    metrics = [("agree", "top-1 agreement with label (%)"), ("p_true", "p(true class)"), ("entropy", "entropy / log C")]
    ops = list(dict.fromkeys(r["op"] for r in result["ops"]))
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for op in ops:
            pts = [(r["level"], r[metric]) for r in result["ops"] if r["op"] == op]
            ax.plot(*zip(*pts, strict=True), marker=".", label=op)
        own = _own_magnitudes(result)
        if own:
            ax.axhline(own[metric], color="k", linestyle="--", linewidth=2, label="whole policy (own magnitudes)")
        elif result["policy"]:
            pts = [(r["level"], r[metric]) for r in result["policy"]]
            ax.plot(*zip(*pts, strict=True), "k--", marker="o", linewidth=2, label="whole policy")
        ax.axhline(result["clean"][metric], color="grey", linestyle=":", label="clean")
        ax.set_xlabel(f"level ({result['space']} space)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Teacher's view of {result['spec']} per op and level ({result['clean']['n']} images)")
    fig.savefig(path, dpi=110)
    return path


def _gallery(per_image: dict[str, Any], labels: torch.Tensor, classes: Sequence[str], k: int, path: Path) -> Path:
    from matplotlib.figure import Figure

    s, params, names = per_image["scores"], per_image["params"], per_image["op_names"]
    order = s["p_true"].argsort()[:k].tolist()
    cols = min(8, len(order))
    rows = max(1, math.ceil(len(order) / cols))
    fig = Figure(figsize=(1.9 * cols, 2.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order, strict=False):
        ax.imshow(per_image["images"][i].permute(1, 2, 0).numpy(), interpolation="nearest")
        steps = [
            f"{names[int(o)]} {float(lv):+g}"
            for o, lv, a in zip(params["op"][i], params["level"][i], params["applied"][i], strict=True)
            if bool(a) and names[int(o)] != "identity"
        ]
        ax.set_title(
            f"{classes[int(labels[i])]} -> {classes[int(s['pred'][i])]} ({s['p_pred'][i]:.2f})\n"
            f"p(true) {s['p_true'][i]:.2f}\n" + ", ".join(steps),
            fontsize=6,
        )
    fig.suptitle(f"Most ambiguous images under {per_image['spec']} (label -> teacher's top-1)", fontsize=9)
    fig.savefig(path, dpi=110)
    return path
