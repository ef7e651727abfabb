"""augkd.distill.cache and ``augkd teacher-cache``: a cached run reproduces the live teacher's losses step for step,
an interrupted build resumes, and every mismatch between a cache and a run is a clear error before training."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from augkd.augment.base import RandomCropFlip
from augkd.checkpoint import load_checkpoint
from augkd.cli import main
from augkd.config import load_config
from augkd.data import build_datasets, dataset_stats, subset_per_class
from augkd.data.pipeline import BatchPipeline, Normalize
from augkd.data.stream import StreamLoader, TrainCrop, scan_stream_split
from augkd.digest import TRAILER_BYTES, encode_trailer, make_seal
from augkd.distill.cache import (
    CacheError,
    CacheLayout,
    TeacherCache,
    dataset_fingerprint,
    epoch_path,
    pack_indices,
    prepare_cache_dir,
    unpack_indices,
    write_epoch,
)
from augkd.distill.cache_builder import write_teacher_cache
from augkd.distill.loss import TopKKL, teacher_top_k
from augkd.distill.task import CachedDistillationTask, DistillationTask
from augkd.registry import Registry
from augkd.train import build
from augkd.train import teacher_cache as teacher_cache_module
from augkd.train.build import build_cached_distillation_task, build_pipeline, resolve_amp
from augkd.train.config import TrainConfig
from augkd.train.loop import RunError, setup_run, train, train_one_epoch
from augkd.train.teacher_cache import build_teacher_cache

POLICY = "augment.policy=ra-n2-m9"
CACHE_K = 5


@pytest.fixture(scope="module")
def tiny(tiny_overrides):
    return lambda out_dir, *extra: load_config(TrainConfig, None, tiny_overrides(out_dir, POLICY, *extra))


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("teacher")
    train(tiny(out, "model.kwargs.width=12", "augment.policy=none"), quiet=True)
    return out / "tiny" / "best.pt"


@pytest.fixture(scope="module")
def train_set(tiny, tmp_path_factory):
    return build_datasets(tiny(tmp_path_factory.mktemp("data")).data, quiet=True)[0]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny, teacher_ckpt, train_set):
    """A float32 cache of the tiny run's first two epochs, top-5 at T=2 (the cifar10 preset's)."""
    out = tmp_path_factory.mktemp("cache") / "c"
    cfg = tiny(out.parent)
    build_teacher_cache(cfg, out, teacher=str(teacher_ckpt), epochs=2, k=CACHE_K, dataset=train_set, quiet=True)
    return out


class StepRecorder(nn.Module):
    """Wraps a task and keeps every step's (loss, kd_loss): the loop's interface is the task."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task
        self.steps: list[tuple[float, float]] = []

    def forward(self, *args):
        out = self.task(*args)
        self.steps.append((out["loss"].item(), out["kd_loss"].item()))
        return out


def per_step_losses(cfg: TrainConfig, epochs: int) -> list[tuple[float, float]]:
    run = setup_run(cfg, quiet=True)
    run.task = StepRecorder(run.task)
    for epoch in range(epochs):
        train_one_epoch(run, epoch, progress=False)
    return run.task.steps


def test_cached_run_matches_the_live_teacher_step_for_step(tmp_path, tiny, teacher_ckpt, cache):
    live = per_step_losses(tiny(tmp_path / "live", f"kd.teacher={teacher_ckpt}", "epochs=2"), epochs=2)
    cached = per_step_losses(tiny(tmp_path / "cached", f"kd.cache={cache}", "epochs=2"), epochs=2)
    assert len(live) == len(cached) == 8  # 2 epochs x 4 steps of 50 images
    diff = max(abs(a - b) for x, y in zip(live, cached) for a, b in zip(x, y))
    assert diff <= 1e-6, diff
    assert all(kd_loss > 0 for _, kd_loss in cached)  # the KD term is really there


@pytest.fixture(scope="module")
def live_batch(tmp_path_factory, tiny, teacher_ckpt):
    """A KD run with the live teacher, and its first batch of epoch 1, augmented and normalized."""
    run = setup_run(tiny(tmp_path_factory.mktemp("live"), f"kd.teacher={teacher_ckpt}"), quiet=True)
    run.train_loader.set_epoch(1)
    batch = next(iter(run.train_loader))
    with torch.no_grad():
        images = run.normalize(run.augment(batch.images, batch.indices, 1))
    return run, (run.model, images, batch.labels, batch.indices, 1)


@pytest.mark.parametrize(
    ("mode", "k", "temperature"),
    [("renorm", 3, 2.0), ("renorm", 5, 4.0), ("renorm", 1, 1.0), ("partial", 3, 2.0), ("partial", 5, 1.0)],
)
def test_every_mode_and_weighting_from_the_cache_equals_the_live_task(live_batch, cache, mode, k, temperature):
    run, args = live_batch
    reader = TeacherCache(cache)
    for weighting in ("constant", "entropy", "doubt"):
        loss = TopKKL(k, temperature, mode)
        a = DistillationTask(run.task.teacher, loss, lam=1.0, weighting=weighting)(*args)
        b = CachedDistillationTask(reader, loss, lam=1.0, weighting=weighting)(*args)
        for key in ("loss", "kd_loss"):
            assert (a[key] - b[key]).abs().item() <= 1e-6, (weighting, key)


def test_partial_at_a_temperature_the_cache_lacks_is_refused(cache):
    reader = TeacherCache(cache)
    top = reader.lookup(0, reader.sample_ids[:4], 3, temperature=4.0)
    assert top.lse is None  # the top-K logits cannot give logsumexp(z / 4) over all classes
    with pytest.raises(ValueError, match="partial needs the teacher's log-sum-exp"):
        TopKKL(3, 4.0, "partial").from_teacher(torch.zeros(4, 10), top)


@pytest.fixture(scope="module")
def cache16(tmp_path_factory, tiny, teacher_ckpt, train_set):
    """The float16 layout of the ``cache`` fixture (the same teacher outputs)."""
    out = tmp_path_factory.mktemp("cache16") / "c"
    f16 = {"logits_dtype": "float16", "dataset": train_set, "quiet": True}
    build_teacher_cache(tiny(out.parent), out, teacher=str(teacher_ckpt), epochs=2, k=CACHE_K, **f16)
    return out


@pytest.mark.parametrize(
    ("mode", "k", "temperature"), [("renorm", 3, 2.0), ("renorm", 5, 4.0), ("partial", 3, 2.0), ("partial", 5, 1.0)]
)
def test_float16_layout_is_smaller_and_every_mode_and_weighting_stays_close(
    cache, cache16, live_batch, mode, k, temperature
):
    """Packed indices, float16 logits, float16 statistics (the log-sum-exps relative to those of the K stored
    logits): 21 bytes at K=5 and 10 classes (46 in float32); the indices exact, the log-sum-exps within half a
    float16 step of what is stored, and the loss of every mode and weighting within 1e-4 of the float32 cache's
    (or 5e-4 of it relative)."""
    f32, f16 = TeacherCache(cache), TeacherCache(cache16)
    assert (f32.bytes_per_sample, f16.bytes_per_sample) == (2 * 5 + 4 * 5 + 16, 3 + 2 * 5 + 8)
    _, args = live_batch
    ids = args[3]
    for t in (2.0, 1.0):  # the cache's T and T = 1: the two stored log-sum-exps
        a, b = f32.lookup(1, ids, CACHE_K, t), f16.lookup(1, ids, CACHE_K, t)
        assert torch.equal(a.indices, b.indices)
        assert torch.equal(b.logits, a.logits.half().float())
        bound = 2.0**-11 * (a.lse - torch.logsumexp(b.logits / t, 1)).abs() + 1e-6  # half a float16 step
        assert bool(((a.lse - b.lse).abs() <= bound).all()), (a.lse - b.lse).abs().max()
        assert torch.allclose(a.entropy, b.entropy, rtol=2.0**-11, atol=0)
        assert torch.allclose(a.log_p_label, b.log_p_label, rtol=2.0**-11, atol=1e-7)
    for weighting in ("constant", "entropy", "doubt"):
        loss = TopKKL(k, temperature, mode)
        x = CachedDistillationTask(f32, loss, lam=1.0, weighting=weighting)(*args)
        y = CachedDistillationTask(f16, loss, lam=1.0, weighting=weighting)(*args)
        diff = abs(x["kd_loss"].item() - y["kd_loss"].item())
        assert 0 < diff <= max(1e-4, 5e-4 * x["kd_loss"].item()), (weighting, diff)


CLASSES = (2, 10, 100, 1000, 4096, 5000, 40000)


@pytest.mark.parametrize("num_classes", CLASSES)
def test_packed_indices_round_trip(tmp_path, num_classes):
    """Every class count and K: written to an epoch file and read back by lookups of any k <= K, including the
    largest index and a row of the K largest, with the layout packing exactly where it saves bytes."""
    g = torch.Generator().manual_seed(num_classes)
    rows = 300
    bits = max(1, (num_classes - 1).bit_length())
    for k in sorted({1, 2, 3, 7, 10, 50, 100} & set(range(1, num_classes + 1))):
        indices = torch.stack([torch.randperm(num_classes, generator=g)[:k] for _ in range(rows)])
        indices[0] = torch.arange(num_classes - k, num_classes).flip(0)
        reader = _write_cache(tmp_path / f"k{k}", indices, torch.linspace(5.0, -5.0, k).expand(rows, k), num_classes)
        layout = reader.layout
        assert layout.packed == (math.ceil(k * bits / 8) < k * (2 if num_classes <= 32768 else 4))
        assert layout.bytes_per_sample == (math.ceil(k * bits / 8) if layout.packed else 2 * k) + 2 * k + 8
        picked = torch.tensor([rows - 1, 0, 5, 0])
        for kk in {1, k // 2 + 1, k}:
            top = reader.lookup(0, picked, kk, 2.0).indices
            assert top.dtype == torch.int64 and torch.equal(top, indices[picked, :kk]), (k, kk)
        assert torch.equal(reader.lookup(0, torch.arange(rows), k, 2.0).indices, indices)


def _write_cache(root, indices, logits, num_classes, stats=None, temperature=2.0, dtype="float16") -> TeacherCache:
    """A one-epoch cache of these rows (sample ids 0..rows-1), opened for reading."""
    rows, k = indices.shape
    layout = CacheLayout(rows, k, num_classes, dtype, temperature)
    header = {"key": {}, "k": k, "temperature": temperature, "num_classes": num_classes, "rows": rows}
    header.update(logits_dtype=dtype, **layout.header_entries())
    prepare_cache_dir(root, header, torch.arange(rows))
    stats = torch.tensor([3.0, 5.0, 0.5, -1.0]).expand(rows, 4) if stats is None else stats
    write_epoch(root, 0, layout, indices, logits, stats, header)
    return TeacherCache(root)


def test_pack_indices_bit_order_and_refusals():
    """Index j of a row is bits j*b.. of the row, least significant first; what b bits cannot hold is refused."""
    packed = pack_indices(np.array([[5, 1023, 0, 512]]), 10)
    bits = np.unpackbits(packed, axis=1, bitorder="little")[0]
    assert packed.shape == (1, 5)
    assert [int("".join(map(str, bits[10 * j : 10 * j + 10][::-1])), 2) for j in range(4)] == [5, 1023, 0, 512]
    assert unpack_indices(packed, 4, 10).tolist() == [[5, 1023, 0, 512]]
    assert unpack_indices(packed, 2, 10).dtype == np.int16 and unpack_indices(packed, 2, 16).dtype == np.int32
    with pytest.raises(CacheError, match=r"class indices must lie in \[0, 16\) to be packed in 4 bits; got -1"):
        pack_indices(np.array([[3, -1]]), 4)
    with pytest.raises(CacheError, match=r"\[0, 16\) to be packed in 4 bits; got 0\.\.16"):
        pack_indices(np.array([[0, 16]]), 4)


def test_bytes_per_sample_at_k10():
    """The issue's figure: at most 44 bytes at K=10 in float16 for 1,000 classes (41); float32 unchanged."""
    assert CacheLayout(1, 10, 1000, "float16").bytes_per_sample == 13 + 20 + 8 == 41
    assert CacheLayout(1, 10, 1000).bytes_per_sample == 76
    assert CacheLayout(1, 10, 40000).bytes_per_sample == 96  # int32 indices past 32,768 classes
    assert CacheLayout(1, 10, 40000, "float16").bytes_per_sample == 20 + 20 + 8  # 16-bit packing beats int32
    assert CacheLayout(1, 1, 1000, "float16").index_dtype == "int16"  # one 10-bit index: packing saves nothing
    # The float32 layout's blocks, as every earlier augkd wrote them.
    assert CacheLayout(6, 3, 10).describe() == {
        "indices": {"offset": 0, "dtype": "int16", "shape": [6, 3]},
        "logits": {"offset": 64, "dtype": "float32", "shape": [6, 3]},
        "stats": {"offset": 192, "dtype": "float32", "shape": [6, 4]},
    }


@pytest.mark.parametrize(
    ("num_classes", "sha256"),
    [
        (10, "9d515f789513bfe7b7745144efc26a9b6bddf091b01c7acf082b15803e480153"),
        (40000, "42db1eab06adb85d80c47e7b77c30b02d728f78dc522d0450b1f5ecb740fe47b"),
    ],
)
def test_float32_epoch_files_are_byte_for_byte_those_of_earlier_augkd(tmp_path, num_classes, sha256):
    """The hashes of these files were taken from augkd before the float16 layout changed (commit 9bf2654)."""
    rows, k = 6, 3
    indices = (torch.arange(rows * k) * 7919 % num_classes).reshape(rows, k)
    logits = -torch.arange(rows * k, dtype=torch.float32).reshape(rows, k) / 3
    stats = torch.arange(rows * 4, dtype=torch.float32).reshape(rows, 4) / 7 - 1
    header = {"key": {"a": 1}, "k": k, "temperature": 2.0, "num_classes": num_classes, "rows": rows}
    header["logits_dtype"] = "float32"
    path = write_epoch(tmp_path, 0, CacheLayout(rows, k, num_classes), indices, logits, stats, header)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def test_float16_layout_keeps_the_stats_of_large_logits_and_refuses_what_float16_cannot_hold(tmp_path):
    """ImageNet-scale logits (log-sum-exp near 25): the log-sum-exps come back within half a float16 step of
    ``lse - lse_K`` (at most 0.002 for 1,000 classes), not of ``lse`` (0.008 at 25); a logit past float16's range
    is refused."""
    g = torch.Generator().manual_seed(0)
    rows, classes, k, temperature = 512, 1000, 10, 2.0
    z = torch.randn(rows, classes, generator=g) * 3
    labels = torch.randint(0, classes, (rows,), generator=g)
    z[torch.arange(rows), labels] += torch.rand(rows, generator=g) * 20 + 5
    top = teacher_top_k(z, k, temperature, labels)
    lse_1 = teacher_top_k(z, 1).lse
    stats = torch.stack([top.lse, lse_1, top.entropy, top.log_p_label], dim=1)
    reader = _write_cache(tmp_path / "c", top.indices, top.logits, classes, stats, temperature)
    at_t, at_1 = reader.lookup(0, torch.arange(rows), k, temperature), reader.lookup(0, torch.arange(rows), k, 1.0)
    got_logits = at_t.logits
    got = torch.stack([at_t.lse, at_1.lse, at_t.entropy, at_t.log_p_label], dim=1)
    assert torch.equal(at_t.indices, top.indices) and torch.equal(got_logits, top.logits.half().float())
    assert float(lse_1.max()) > 24
    err = (got[:, :2] - stats[:, :2]).abs()
    assert float(err.max()) <= 2.0**-11 * math.log(classes) + 1e-5
    lse_k = torch.stack([torch.logsumexp(got_logits / temperature, 1), torch.logsumexp(got_logits, 1)], 1)
    assert bool((err <= (stats[:, :2] - lse_k).abs() * 2.0**-11 + 1e-5).all())
    assert torch.allclose(got[:, 2:], stats[:, 2:], rtol=2.0**-11, atol=1e-7)
    huge = top.logits.clone()
    huge[3, 0] = -70000.0
    layout = reader.layout
    with pytest.raises(CacheError, match="a teacher logit of magnitude 70000 does not fit float16 .* --dtype float32"):
        layout.encode(top.indices, huge, stats)
    with pytest.raises(CacheError, match="needs the cache's temperature"):
        CacheLayout(rows, k, classes, "float16").encode(top.indices, top.logits, stats)


def test_a_float16_cache_of_the_older_layout_is_refused_in_one_line(tmp_path, tiny, cache16, train_set):
    old = tmp_path / "old"
    shutil.copytree(cache16, old)
    header = json.loads((old / "header.json").read_text())
    del header["float16_layout"]  # what the 56-byte layout's header looked like
    (old / "header.json").write_text(json.dumps(header))
    message = r"a float16 cache in another layout \(float16_layout=None; this augkd reads 2, older .*\): delete it"
    with pytest.raises(CacheError, match=message):
        TeacherCache(old)
    with pytest.raises(RunError, match=f"kd.cache: .*{message}"):
        check_cache(tiny(tmp_path, f"kd.cache={old}", "epochs=2"), train_set)
    # The layout's version is sealed into the epoch files: a file sealed without it (as the older layout's were)
    # is refused under a header of this layout, so no file changes its reading behind its seal.
    stale = tmp_path / "stale"
    shutil.copytree(cache16, stale)
    header = json.loads((stale / "header.json").read_text())
    data = epoch_path(stale, 0).read_bytes()[:-TRAILER_BYTES]
    identity = {name: header[name] for name in ("key", "k", "temperature", "num_classes", "rows", "logits_dtype")}
    epoch_path(stale, 0).write_bytes(data + encode_trailer(make_seal(data, identity, epoch=0)))
    with pytest.raises(RunError, match=r"epoch_0000.bin: built with other settings than this cache's \(seal key"):
        check_cache(tiny(tmp_path, f"kd.cache={stale}", "epochs=2"), train_set)


def test_interrupted_build_keeps_finished_epochs_and_redoes_the_partial_one(
    tmp_path, tiny, teacher_ckpt, cache, train_set, monkeypatch
):
    data = {"dataset": train_set, "quiet": True}
    cfg, out = tiny(tmp_path), tmp_path / "c"
    real_load = teacher_cache_module.load_teacher

    def teacher_killed_in_epoch_1(*args, **kwargs):
        teacher, calls = real_load(*args, **kwargs), []

        def forward(images):
            calls.append(1)
            if len(calls) == 4 + 3:  # 4 batches per epoch: the third batch of epoch 1
                raise KeyboardInterrupt
            return teacher(images)

        return forward

    monkeypatch.setattr(teacher_cache_module, "load_teacher", teacher_killed_in_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        build_teacher_cache(cfg, out, teacher=str(teacher_ckpt), epochs=2, k=CACHE_K, **data)
    monkeypatch.undo()
    assert epoch_path(out, 0).is_file() and not epoch_path(out, 1).exists()
    assert not list(out.glob(".*.tmp"))
    (out / ".epoch_0001.bin.x.tmp").write_bytes(b"left by a killed build")
    first = epoch_path(out, 0).stat()
    summary = build_teacher_cache(cfg, out, teacher=str(teacher_ckpt), epochs=3, k=CACHE_K, **data)
    assert summary["kept"] == [0] and summary["written"] == [1, 2]
    again = epoch_path(out, 0).stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # not rewritten
    assert not list(out.glob(".*.tmp"))
    for epoch in (0, 1):  # the resumed cache is byte for byte the uninterrupted one
        assert epoch_path(out, epoch).read_bytes() == epoch_path(cache, epoch).read_bytes()
    with pytest.raises(RunError, match="another pipeline.stages.augment.policy.magnitude; use another --out"):
        build_teacher_cache(
            tiny(tmp_path, "augment.policy=geo-n2-m6"), out, teacher=str(teacher_ckpt), epochs=1, k=CACHE_K, **data
        )


@pytest.fixture
def other_teacher(tmp_path, teacher_ckpt):
    state = load_checkpoint(teacher_ckpt)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    path = tmp_path / "other.pt"
    torch.save(state, path)
    return path


def check_cache(cfg: TrainConfig, train_set) -> CachedDistillationTask:
    """The cache check setup_run runs before training (without reloading the dataset every time)."""
    stats = dataset_stats(cfg.data)
    pipeline = build_pipeline(cfg, Normalize(stats["mean"], stats["std"]))
    cpu = torch.device("cpu")
    return build_cached_distillation_task(cfg, train_set, cpu, resolve_amp(cfg.amp, cpu), pipeline)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("augment.policy=geo-n2-m6",), r"built with pipeline\.stages\.augment\.policy\.magnitude=9\.0, .* 6\.0"),
        (("seed=1",), r"built with pipeline\.stages\.augment\.base\.seed=0, but this run has 1"),
        (("augment.fill=0",), r"built with pipeline\.stages\.augment\.policy\.fill=128, but this run has 0"),
        (("data.crop_padding=2",), r"built with pipeline\.stages\.augment\.base\.padding=4, but this run has 2"),
        (("augment.off_last_epochs=1",), r"built with pipeline\.stages\.augment\.policy_epochs=None, but .* 1"),
        (("augment.cutout=8",), r"built with pipeline\.stages\.augment\.post\.type=None, but .* 'Cutout'"),
        (("data.norm_stats=imagenet",), r"built with pipeline\.normalize\.mean=\[0\.49"),
        (("amp=bf16",), r"built with amp \(autocast dtype of the teacher's forward pass\)='off'"),
        (("kd.k=6",), "holds the teacher's top-5 classes, but this run asks kd.k=6"),
        (("epochs=3",), "the run trains 3 epochs but the cache has epochs 0..1; missing epoch_0002.bin"),
        (("kd.mode=partial", "kd.temperature=4"), "kd.mode=partial needs the log-sum-exp of all logits at T=4.0"),
    ],
)
def test_mismatches_are_errors_before_training(tmp_path, tiny, cache, train_set, extra, message):
    cfg = tiny(tmp_path, f"kd.cache={cache}", "epochs=2")
    assert isinstance(check_cache(cfg, train_set), CachedDistillationTask)
    with pytest.raises(RunError, match=f"kd.cache: .*{message}"):
        check_cache(tiny(tmp_path, f"kd.cache={cache}", "epochs=2", *extra), train_set)


def test_other_data_other_teacher_and_damaged_caches_are_errors(
    tmp_path, tiny, cache, train_set, other_teacher, teacher_ckpt
):
    def check(path, *extra, data=train_set):
        return check_cache(tiny(tmp_path, f"kd.cache={path}", "epochs=2", *extra), data)

    with pytest.raises(RunError, match=r"built on another training set \(.*200 images, subset \{'per_class': 20"):
        check(cache, data=subset_per_class(train_set, 10, 0))
    check(cache, f"kd.teacher={teacher_ckpt}")  # kd.teacher beside kd.cache: its sha256 must be the cache's
    with pytest.raises(RunError, match="built from another teacher than kd.teacher"):
        check(cache, f"kd.teacher={other_teacher}")
    broken = tmp_path / "broken"
    shutil.copytree(cache, broken)
    epoch_path(broken, 1).unlink()
    with pytest.raises(RunError, match="cache has epochs 0..0; missing epoch_0001.bin"):
        check(broken)
    (broken / "header.json").write_text("{not json")
    with pytest.raises(RunError, match="unreadable cache header"):
        check(broken)
    (broken / "header.json").write_text(json.dumps({"format": "something/9"}))
    with pytest.raises(RunError, match="not a teacher cache of format"):
        check(broken)
    (broken / "header.json").unlink()
    with pytest.raises(RunError, match=r"no teacher cache here \(header.json missing\)"):
        check(broken)
    with pytest.raises(CacheError, match="no teacher cache here"):
        TeacherCache(tmp_path / "nowhere")


def test_cli_builds_a_cache_and_reports_mismatches_in_one_line(tmp_path, capsys, tiny_overrides, teacher_ckpt, cache):
    args = [*tiny_overrides(tmp_path, POLICY)]
    assert (
        main(
            [
                "teacher-cache",
                "--teacher",
                str(teacher_ckpt),
                "--epochs",
                "1",
                "--k",
                "3",
                "--json",
                "--out",
                str(tmp_path / "c"),
                *args,
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == [0] and summary["rows"] == 200 and summary["bytes_per_sample"] == 3 * 2 + 3 * 4 + 16
    assert main(["teacher-cache", "--out", str(tmp_path / "d"), *args]) == 2
    assert (
        capsys.readouterr().err.strip() == "augkd teacher-cache: error: no teacher: pass --teacher or "
        "kd.teacher=<checkpoint | timm:NAME | torchvision:NAME>"
    )
    assert main(["train", "-q", *args, f"kd.cache={cache}", "seed=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("augkd train: error: kd.cache: ") and "seed=0" in err


def _key(*overrides: str) -> dict:
    from augkd.distill.cache import cache_key

    cfg = load_config(TrainConfig, None, ["augment.policy=geo-n2-m5", "epochs=10", *overrides])
    return cache_key(build_pipeline(cfg, Normalize((0.5,) * 3, (0.25,) * 3)).replay_key(), "data-sha", None, None)


def test_cache_key_follows_the_effective_augmentation() -> None:
    """augment.magnitude and augment.off_last_epochs change the augmented images, so they change the key."""
    policy = "pipeline.stages.augment.policy.spec"
    assert _key()[policy] == "geo-n2-m5" and _key()["pipeline.stages.augment.policy_epochs"] is None
    assert _key("augment.magnitude=2")[policy] == "geo-n2-m2"
    assert _key("augment.off_last_epochs=3")["pipeline.stages.augment.policy_epochs"] == 7


class Invert(nn.Module):
    """A stage the trainer does not have: every image inverted (a stand-in for a new stage such as Mixup)."""

    def __init__(self, level: int = 255) -> None:
        super().__init__()
        self.level = level

    def forward(self, batch, epoch):
        return batch._replace(images=self.level - batch.images)


def test_a_new_stage_changes_the_key_and_reaches_trainer_and_cache(
    tmp_path, tiny, teacher_ckpt, cache, train_set, monkeypatch
):
    """A stage registered the way a new stage would be (no other edit) changes the key of every cache, and the
    trainer and the cache builder both apply it."""
    before = _key()
    stages = Registry("batch stage", {**build.BATCH_STAGES, "invert": lambda cfg: Invert()})
    monkeypatch.setattr(build, "BATCH_STAGES", stages)
    after = _key()
    assert after["pipeline.stages.invert.type"] == "Invert" and after["pipeline.stages.invert.level"] == 255
    assert {k: v for k, v in after.items() if not k.startswith("pipeline.stages.invert.")} == before
    # A cache built without the stage no longer serves the run, naming the stage.
    with pytest.raises(RunError, match=r"kd.cache: .*built with pipeline\.stages\.invert\.type=None, but .*'Invert'"):
        check_cache(tiny(tmp_path, f"kd.cache={cache}", "epochs=2"), train_set)
    # Built with the stage, the cache reproduces the live teacher on the trainer's (inverted) batches.
    out = tmp_path / "inverted"
    build_teacher_cache(
        tiny(tmp_path), out, teacher=str(teacher_ckpt), epochs=1, k=CACHE_K, dataset=train_set, quiet=True
    )
    live_cfg = tiny(tmp_path / "live", f"kd.teacher={teacher_ckpt}", "epochs=1")
    assert list(setup_run(live_cfg, quiet=True).pipeline.stages) == ["augment", "invert"]
    live = per_step_losses(live_cfg, epochs=1)
    cached = per_step_losses(tiny(tmp_path / "cached", f"kd.cache={out}", "epochs=1"), epochs=1)
    assert len(live) == len(cached) == 4
    assert max(abs(a - b) for x, y in zip(live, cached) for a, b in zip(x, y)) <= 1e-6


def _flip_byte(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def _truncate(path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


# (what is done to epoch 1 of a copy, the error of a run's check before training or None, the error of the first
# lookup in epoch 1). A flipped byte keeps the size and the seal, so only hashing on first open finds it.
DAMAGE = {
    "flipped byte": (lambda root: _flip_byte(epoch_path(root, 1), 7), None, "contents differ from their seal"),
    "flipped seal byte": (
        lambda root: _flip_byte(epoch_path(root, 1), epoch_path(root, 1).stat().st_size - TRAILER_BYTES + 2),
        "no seal at the end of the file",
        "no seal at the end of the file",
    ),
    "truncated": (lambda root: _truncate(epoch_path(root, 1), 100), "too short to hold its seal", "too short"),
    "truncated payload": (
        lambda root: _truncate(epoch_path(root, 1), epoch_path(root, 1).stat().st_size - 1),
        "damaged seal|no seal",
        "damaged seal|no seal",
    ),
    "missing": (lambda root: epoch_path(root, 1).unlink(), "missing epoch_0001.bin", "missing"),
    "renamed from epoch 0": (
        lambda root: shutil.copyfile(epoch_path(root, 0), epoch_path(root, 1)),
        "sealed as epoch 0, expected epoch 1",
        "sealed as epoch 0, expected epoch 1",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_epoch_file_is_refused_in_one_line_and_rebuilt(
    tmp_path, capsys, tiny, tiny_overrides, teacher_ckpt, cache, train_set, damage
):
    do, before_training, on_lookup = DAMAGE[damage]
    broken = tmp_path / "broken"
    shutil.copytree(cache, broken)
    do(broken)
    cfg = tiny(tmp_path, f"kd.cache={broken}", "epochs=2")
    if before_training is None:
        check_cache(cfg, train_set)
    else:
        with pytest.raises(RunError, match=before_training):
            check_cache(cfg, train_set)
    reader = TeacherCache(broken)
    reader.lookup(0, reader.sample_ids[:4], 3, 2.0)  # epoch 0 is intact
    with pytest.raises(CacheError, match=f"epoch_0001.bin: .*({on_lookup}).* \\(epoch 1; run `augkd teacher-cache`"):
        reader.lookup(1, reader.sample_ids[:4], 3, 2.0)
    if before_training is None:  # what a training run prints: one line naming the file
        assert main(["train", "-q", *tiny_overrides(tmp_path / "run", POLICY), f"kd.cache={broken}", "epochs=2"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "epoch_0001.bin" in err and "sha256 mismatch" in err, err
    # Built again, only the damaged epoch is redone, and the cache equals the one built in one go, byte for byte.
    args = {"teacher": str(teacher_ckpt), "epochs": 2, "k": CACHE_K, "dataset": train_set, "quiet": True}
    summary = build_teacher_cache(tiny(tmp_path), broken, **args)
    assert summary["kept"] == [0] and summary["written"] == [1]
    assert summary["rebuilt"] == ([] if damage == "missing" else [1])
    for epoch in (0, 1):
        assert epoch_path(broken, epoch).read_bytes() == epoch_path(cache, epoch).read_bytes()


def test_epoch_files_carry_their_key_so_a_lost_header_never_adopts_them(tmp_path, tiny, teacher_ckpt, cache, train_set):
    args = {"teacher": str(teacher_ckpt), "epochs": 2, "k": CACHE_K, "dataset": train_set, "quiet": True}
    lost = tmp_path / "lost"
    shutil.copytree(cache, lost)
    header = json.loads((lost / "header.json").read_text())
    # A header edited (or replaced by another cache's) no longer matches the key sealed into the epoch files.
    for name in header["key"]:  # the key a seed=5 run expects (every stage's seed), not what the files hold
        if name.endswith(".seed"):
            header["key"][name] = 5
    (lost / "header.json").write_text(json.dumps(header))
    with pytest.raises(RunError, match=r"epoch_0000.bin: built with other settings than this cache's \(seal key"):
        check_cache(tiny(tmp_path, f"kd.cache={lost}", "epochs=2", "seed=5"), train_set)
    # header.json gone, then a build with another policy: the old epoch files are rebuilt, never adopted.
    (lost / "header.json").unlink()
    summary = build_teacher_cache(tiny(tmp_path, "augment.policy=geo-n2-m6"), lost, **args)
    assert summary["kept"] == [] and summary["written"] == [0, 1] and summary["rebuilt"] == [0, 1]
    assert epoch_path(lost, 1).read_bytes() != epoch_path(cache, 1).read_bytes()
    # and back to the first policy (header lost again): the same bytes as the original cache
    (lost / "header.json").unlink()
    build_teacher_cache(tiny(tmp_path), lost, **args)
    assert epoch_path(lost, 1).read_bytes() == epoch_path(cache, 1).read_bytes()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"indices": 10}, r"row 0 holds class index \[10, 1, 2\] outside \[0, 10\)"),
        ({"indices": 15}, r"row 0 holds class index \[15, 1, 2\] outside \[0, 10\)"),  # the largest 4-bit one
        ({"indices": -1}, r"row 0 holds class index \[-1, 1, 2\] outside"),
        ({"indices": 0, "all_rows": True}, r"row 0 repeats a class in its top-K indices \[0, 0, 0\]"),
        ({"logits": float("nan")}, "row 0 of the logits block is not finite"),
        ({"stats": float("inf")}, "row 0 of the stats block is not finite"),
        ({"logits": 99.0}, "row 0 holds logits out of top-K order"),
    ],
)
def test_impossible_values_under_a_valid_seal_are_refused_on_load(tmp_path, cache, values, message, dtype):
    """A writer that sealed wrong values (a bug, zeroed rows): the first open checks ranges and names the file.
    In the float16 layout the class indices are packed in 4 bits (10 classes), so the check reads them unpacked;
    a negative index cannot be packed at all and is refused by the writer."""
    root = tmp_path / "c"
    shutil.copytree(cache, root)
    header = json.loads((root / "header.json").read_text())
    rows, classes = header["rows"], header["num_classes"]
    top_idx = torch.tensor([0, 1, 2]).expand(rows, 3).clone()
    top_val = torch.tensor([3.0, 2.0, 1.0]).expand(rows, 3).clone()
    stats = torch.zeros(rows, 4)
    if "indices" in values:
        top_idx[slice(None) if values.get("all_rows") else 0] = values["indices"]
        if not values.get("all_rows"):
            top_idx[0, 1:] = torch.tensor([1, 2])
    if "logits" in values:
        top_val[0, 1] = values["logits"]
    if "stats" in values:
        stats[0, 2] = values["stats"]
    header["k"] = 3
    layout = CacheLayout(rows, 3, classes, dtype, header["temperature"])
    header.update(logits_dtype=dtype, **layout.header_entries())
    assert layout.packed == (dtype == "float16")
    out = tmp_path / "bad"
    out.mkdir()
    shutil.copy(root / "sample_ids.npy", out)
    (out / "header.json").write_text(json.dumps(header))
    if dtype == "float16" and values.get("indices") == -1:
        with pytest.raises(CacheError, match=r"class indices must lie in \[0, 16\) to be packed in 4 bits; got -1"):
            write_epoch(out, 0, layout, top_idx, top_val, stats, header)
        return
    write_epoch(out, 0, layout, top_idx, top_val, stats, header)
    bad = TeacherCache(out)
    assert bad.epochs == [0]  # the seal is fine
    with pytest.raises(CacheError, match=f"epoch_0000.bin: {message}"):
        bad.lookup(0, bad.sample_ids[:4], 3, 2.0)


MIX = ("augment.mixup=0.8", "augment.cutmix=1.0")


class FullRecorder(StepRecorder):
    """Keeps every step's loss, KD loss and agreement with the teacher."""

    def forward(self, *args):
        out = self.task(*args)
        self.steps.append(tuple(out[k].item() for k in ("loss", "kd_loss", "agree_top1", "agree_top5", "teacher_kl")))
        return out


def test_mixup_and_cutmix_replay_exactly_from_the_cache(tmp_path, tiny, teacher_ckpt, cache, train_set):
    """The teacher sees the student's mixed images; the cache replays them: the same losses and agreement, bit
    for bit, on the CPU with amp=off."""
    out = tmp_path / "mixed"
    cfg = tiny(tmp_path, *MIX, "epochs=2")
    build_teacher_cache(cfg, out, teacher=str(teacher_ckpt), epochs=2, k=CACHE_K, dataset=train_set, quiet=True)

    def steps(cfg):
        run = setup_run(cfg, quiet=True)
        assert list(run.pipeline.stages) == ["augment", "mix"]
        run.task = FullRecorder(run.task)
        for epoch in range(2):
            train_one_epoch(run, epoch, progress=False)
        return run.task.steps

    live = steps(tiny(tmp_path / "live", f"kd.teacher={teacher_ckpt}", "epochs=2", *MIX))
    cached = steps(tiny(tmp_path / "cached", f"kd.cache={out}", "epochs=2", *MIX))
    assert len(live) == 8 and live == cached
    unmixed = per_step_losses(tiny(tmp_path / "plain", f"kd.teacher={teacher_ckpt}", "epochs=2"), epochs=2)
    assert [s[:2] for s in live] != unmixed  # mixing really changed what student and teacher saw
    with pytest.raises(RunError, match=r"kd.cache: .*pipeline\.stages\.mix\.type"):  # an unmixed cache: refused
        check_cache(tiny(tmp_path, f"kd.cache={cache}", "epochs=2", *MIX), train_set)


#: sha256 of the cache key of two configs, computed before Mixup/CutMix existed: with mixing off (the default)
#: every existing cache keeps its key.
KEYS_BEFORE_MIXING = {
    (): "56f00286437cdd206d3a354d9919ea2af37d4c28951e8ad4d78fa97c1fd039f5",
    ("augment.policy=ra-n2-m9", "augment.cutout=16", "data.base_aug=crop-flip"): (
        "92bbea0ab62b0a26ec022c2ffbd9bd16d0afe448d86879d0b61674433cf33348"
    ),
}


@pytest.mark.parametrize("overrides", sorted(KEYS_BEFORE_MIXING))
def test_mixing_off_leaves_every_cache_key_as_it_was(overrides):
    import hashlib

    from augkd.distill.cache import cache_key

    cfg = load_config(TrainConfig, None, [*overrides, "augment.mix_prob=0.5"])  # mixing settings without mixing
    key = cache_key(build_pipeline(cfg, Normalize((0.5,) * 3, (0.25,) * 3)).replay_key(), "data-sha", None, None)
    assert hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest() == KEYS_BEFORE_MIXING[overrides]
    mixed = _key("augment.cutmix=1.0", "augment.off_last_epochs=2")
    assert mixed["pipeline.stages.mix.mixer.cutmix_alpha"] == 1.0 and mixed["pipeline.stages.mix.epochs"] == 8


def test_a_stream_cache_serves_every_readable_photo_and_keys_on_the_files(make_tree, tmp_path):
    """Through the stream loader: an unreadable file (skipped in every epoch) gets a placeholder row, every other
    photo the teacher's top-K of the worker's crop; the files' fingerprint follows names and sizes, not folders."""
    root = make_tree(("train",), per_class=4)
    (root / "train" / "dog" / "0001.jpg").write_bytes(b"not a jpeg")
    train_set = scan_stream_split(root, "train")
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, train_set.num_classes)).eval()
    pipeline = BatchPipeline({}, Normalize((0.5,) * 3, (0.25,) * 3))

    def loader() -> StreamLoader:
        transform = TrainCrop(RandomCropFlip(32, seed=3), 32)
        return StreamLoader(train_set, 5, seed=3, transform=transform, workers=0, bad_files="skip")

    with pytest.warns(UserWarning, match=r"skipped unreadable image .*dog/0001\.jpg"):
        out = write_teacher_cache(
            tmp_path / "c", teacher=teacher, teacher_id="t", pipeline=pipeline, loader=loader(), amp_dtype=None,
            epochs=2, k=2, temperature=1.0, quiet=True,
        )  # fmt: skip
    assert out["rows"] == len(train_set) == 12
    cache = TeacherCache(tmp_path / "c")
    assert cache.header["key"]["loader.base.seed"] == 3 and cache.header["key"]["loader.type"] == "TrainCrop"
    with pytest.warns(UserWarning):
        batches = list(pipeline.batches(loader(), 1))
    for batch in batches:
        with torch.no_grad():
            want = teacher_top_k(teacher(batch.images), 2, 1.0, batch.labels)
        got = cache.lookup(1, batch.indices, 2, 1.0)
        assert torch.equal(got.indices, want.indices) and torch.allclose(got.logits, want.logits)
    assert sorted(i for b in batches for i in b.indices.tolist()) == [i for i in range(12) if i != 5]
    assert cache.lookup(1, torch.tensor([5]), 2, 1.0).indices.tolist() == [[0, 1]]  # the placeholder
    # the fingerprint: the same files elsewhere are the same set; a file of another size is not
    first = dataset_fingerprint(train_set)
    copy = shutil.copytree(root, tmp_path / "copy")
    assert dataset_fingerprint(scan_stream_split(copy, "train")) == first
    with open(copy / "train" / "cat" / "0000.jpg", "ab") as f:
        f.write(b"\0")
    assert dataset_fingerprint(scan_stream_split(copy, "train")) != first
