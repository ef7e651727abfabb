"""What the float16 cache layout changes in each kd.mode and kd.weighting, against the float32 cache.

One epoch of a real teacher's outputs (1,000 CIFAR-10 training images under ``ra-n2-m9``) is cached at K=10, T=2
in both layouts; a fixed student (its initial weights: the first step of a run, where the KD term is largest)
then computes the KD term of every batch from each cache, for each mode, K, temperature and weighting a cache
serves. Besides the float16 layout (packed indices, float16 statistics, the log-sum-exps relative to those of
the K stored logits: 41 bytes at K=10 and 1,000 classes, 33 at 10 classes) it scores
the 56-byte layout it replaced (float16 logits, float32 statistics), emulated from the float32 cache. A second
part does the same on 1,000-class logits drawn at ImageNet scale (top logits near 15-25: a stand-in, no
1,000-class teacher is on this machine), written to and read from a one-epoch cache.

Usage (from the repository root; the teacher is any 10-class augkd checkpoint, here the demo's plain run):
    python results/teacher-cache-cpu/float16_error.py TEACHER.pt OUT_DIR > results/teacher-cache-cpu/float16_error.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from augkd.config import load_config
from augkd.distill.cache import CacheLayout, TeacherCache, prepare_cache_dir, write_epoch
from augkd.distill.loss import TeacherTopK, TopKKL, teacher_top_k
from augkd.distill.task import top_k_weights
from augkd.train.config import TrainConfig
from augkd.train.loop import setup_run
from augkd.train.teacher_cache import build_teacher_cache

DATA = Path(os.environ.get("AUGKD_SHARED_DATA", "../shared/data"))
BASE = [
    f"data.root={DATA / 'cifar10-jpg.zip'}",
    f"data.cache_dir={os.environ.get('AUGKD_TEST_CACHE', '.cache/augkd-test')}",
    "data.subset_per_class=100",  # 1,000 real CIFAR-10 training images
    "data.test_subset_per_class=10",
    "epochs=1",
    "batch_size=100",
    "amp=off",
    "threads=1",
    "augment.policy=ra-n2-m9",
    "kd.preset=cifar10",
    "kd.temperature=2",
]
#: (mode, k, temperature) each cache (K=10, T=2) serves.
LOSSES = [("renorm", 3, 2.0), ("renorm", 10, 4.0), ("partial", 3, 2.0), ("partial", 10, 1.0)]
WEIGHTINGS = ("constant", "entropy", "doubt")


def kd_terms(student: torch.Tensor, teacher: TeacherTopK, num_classes: int) -> dict[str, torch.Tensor]:
    """Per-image KD terms (weights applied) of every mode and weighting, float64 for the comparison."""
    out = {}
    for mode, k, temperature in LOSSES:
        top = teacher._replace(indices=teacher.indices[:, :k], logits=teacher.logits[:, :k])
        per_image = TopKKL(k, temperature, mode).from_teacher(student, top, reduction="none")
        for weighting in WEIGHTINGS:
            weights = top_k_weights(teacher, num_classes, weighting)
            term = per_image if weights is None else weights * per_image
            out[f"{mode} k={k} T={temperature:g} {weighting}"] = term.double()
    return out


def compare(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Largest per-image and batch-mean differences, absolute and relative to the reference's mean."""
    result = {}
    for name, ref in reference.items():
        diff = (other[name] - ref).abs()
        scale = ref.abs().mean().item()
        result[name] = {
            "mean_term": ref.mean().item(),
            "max_abs_per_image": diff.max().item(),
            "abs_of_mean": (other[name].mean() - ref.mean()).abs().item(),
            "rel_of_mean": (other[name].mean() - ref.mean()).abs().item() / scale if scale else 0.0,
        }
    return result


def old_float16(top: TeacherTopK) -> TeacherTopK:
    """The 56-byte layout's reading: float16 logits, float32 statistics."""
    return top._replace(logits=top.logits.to(torch.float16).to(torch.float32))


def lookup(cache: TeacherCache, indices: torch.Tensor, temperature: float) -> TeacherTopK:
    return cache.lookup(0, indices, cache.k, temperature)


def with_lse(cache: TeacherCache, indices: torch.Tensor) -> tuple[TeacherTopK, torch.Tensor]:
    """The summary at the cache's T plus ``lse`` at T=1 (partial at T=1 reads the second column)."""
    return lookup(cache, indices, cache.temperature), lookup(cache, indices, 1.0).lse


def terms_of(cache_top: TeacherTopK, lse_1: torch.Tensor, student: torch.Tensor, classes: int) -> dict:
    out = {}
    for mode, k, temperature in LOSSES:
        top = cache_top if temperature != 1.0 else cache_top._replace(lse=lse_1)
        one = kd_terms(student, top, classes)
        out.update({n: v for n, v in one.items() if n.startswith(f"{mode} k={k} T={temperature:g} ")})
    return out


def real_teacher(teacher: str, out: Path) -> dict:
    cfg = load_config(TrainConfig, "configs/cifar10-demo.yaml", [*BASE, f"out_dir={out}"])
    caches = {}
    for dtype in ("float32", "float16"):
        summary = build_teacher_cache(cfg, out / dtype, teacher=teacher, k=10, logits_dtype=dtype, quiet=True)
        caches[dtype] = {"reader": TeacherCache(out / dtype), "bytes_per_sample": summary["bytes_per_sample"]}
    run = setup_run(
        load_config(TrainConfig, "configs/cifar10-demo.yaml", [*BASE, f"out_dir={out / 'run'}"]),
        quiet=True,
        overwrite=True,
    )
    run.model.eval()
    terms: dict[str, dict[str, list[torch.Tensor]]] = {"float32": {}, "float16": {}, "float16-56B": {}}
    lse_err = []
    with torch.no_grad():
        for batch in run.pipeline.batches(run.train_loader, 0):
            student = run.model(batch.images).float()
            f32, f32_lse1 = with_lse(caches["float32"]["reader"], batch.indices)
            f16, f16_lse1 = with_lse(caches["float16"]["reader"], batch.indices)
            lse_err.append(torch.stack([(f16.lse - f32.lse).abs(), (f16_lse1 - f32_lse1).abs()]).max().item())
            for name, top, lse_1 in (
                ("float32", f32, f32_lse1),
                ("float16", f16, f16_lse1),
                ("float16-56B", old_float16(f32), f32_lse1),
            ):
                for key, value in terms_of(top, lse_1, student, 10).items():
                    terms[name].setdefault(key, []).append(value)
    joined = {n: {k: torch.cat(v) for k, v in t.items()} for n, t in terms.items()}
    return {
        "teacher": teacher,
        "config": ["configs/cifar10-demo.yaml", *BASE],
        "images": int(sum(len(v) for v in terms["float32"][next(iter(terms["float32"]))])),
        "bytes_per_sample": {d: caches[d]["bytes_per_sample"] for d in caches},
        "max_abs_lse_error": max(lse_err),
        "float16_vs_float32": compare(joined["float32"], joined["float16"]),
        "float16_56B_vs_float32": compare(joined["float32"], joined["float16-56B"]),
    }


def imagenet_scale(rows: int = 4096, classes: int = 1000, k: int = 10, temperature: float = 2.0) -> dict:
    """Logits drawn at ImageNet scale, through the float16 layout's encode and read (no file)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, classes, generator=g) * 2.5
    labels = torch.randint(0, classes, (rows,), generator=g)
    confidence = torch.rand(rows, generator=g) * 14 + 6  # from ambiguous to certain
    logits[torch.arange(rows), labels] += confidence
    student = torch.randn(rows, classes, generator=g) * 2.0
    full = teacher_top_k(logits, k, temperature, labels)
    lse_1 = teacher_top_k(logits, 1, 1.0).lse
    stats = torch.stack([full.lse, lse_1, full.entropy, full.log_p_label], dim=1)
    results = {}
    f32_terms = terms_of(full, lse_1, student, classes)
    layout = CacheLayout(rows, k, classes, "float16", temperature)
    header = {"key": {}, "k": k, "temperature": temperature, "num_classes": classes, "rows": rows}
    header.update(logits_dtype="float16", **layout.header_entries())
    with tempfile.TemporaryDirectory() as tmp:
        prepare_cache_dir(tmp, header, torch.arange(rows))
        write_epoch(tmp, 0, layout, full.indices, full.logits, stats, header)
        f16, lse_1_16 = with_lse(TeacherCache(tmp), torch.arange(rows))
    assert torch.equal(f16.indices, full.indices)
    st = torch.stack([f16.lse, lse_1_16], dim=1)
    results["float16_vs_float32"] = compare(f32_terms, terms_of(f16, lse_1_16, student, classes))
    old = old_float16(full)
    results["float16_56B_vs_float32"] = compare(f32_terms, terms_of(old, lse_1, student, classes))
    raw = full._replace(lse=full.lse.half().float())  # the plain float16 rounding of lse the layout avoids
    results["lse_t_in_plain_float16_vs_float32"] = compare(
        {n: v for n, v in f32_terms.items() if n.startswith("partial k=3")},
        {n: v for n, v in terms_of(raw, lse_1, student, classes).items() if n.startswith("partial k=3")},
    )
    return {
        "rows": rows,
        "classes": classes,
        "k": k,
        "temperature": temperature,
        "bytes_per_sample": layout.bytes_per_sample,
        "lse_t_range": [full.lse.min().item(), full.lse.max().item()],
        "top_logit_range": [full.logits[:, 0].min().item(), full.logits[:, 0].max().item()],
        "max_abs_lse_error": (st[:, :2] - torch.stack([full.lse, lse_1], 1)).abs().max().item(),
        "max_abs_lse_error_plain_float16": (full.lse.half().float() - full.lse).abs().max().item(),
        **results,
    }


def main(teacher: str, out_dir: str) -> None:
    torch.manual_seed(0)
    result = {"real_teacher_cifar10": real_teacher(teacher, Path(out_dir)), "imagenet_scale": imagenet_scale()}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
