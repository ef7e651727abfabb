"""The same seed gives the same run: nothing outside augkd's named random streams can change a run's numbers.

Weight initialization and each epoch's dropout draw from torch's global RNG, reseeded from the run seed by name
(:func:`augkd.augment.rng.seed_global_stream`) right before each. These tests run the same config under everything
that may run around those streams: a cold or a warm decode cache, evaluation every epoch or not, a teacher or
none, and foreign code that draws from the global RNG at every such point; the losses and weights must not move.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from augkd.augment import rng
from augkd.checkpoint import load_checkpoint
from augkd.config import load_config
from augkd.train import build, loop
from augkd.train.config import TrainConfig


def _run(out: Path, overrides: list[str]) -> tuple[list[float], dict[str, torch.Tensor]]:
    cfg = load_config(TrainConfig, None, [f"out_dir={out}", *overrides])
    loop.train(cfg, quiet=True)
    rows = [json.loads(line) for line in (out / "tiny" / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows], load_checkpoint(out / "tiny" / "last.pt")["model"]


def _assert_same(a: tuple[list[float], dict], b: tuple[list[float], dict]) -> None:
    assert a[0] == b[0]
    for name, value in a[1].items():
        assert torch.equal(value, b[1][name]), name


@pytest.fixture
def base(tiny_overrides, tmp_path) -> list[str]:
    # Dropout makes the per-epoch stream matter; two epochs cross an epoch boundary.
    return tiny_overrides(tmp_path, "epochs=2", "model.drop_rate=0.2", "augment.policy=ra-n2-m9")[1:]


def test_cold_and_warm_decode_cache_give_the_same_run(tmp_path, make_tree, tiny_overrides):
    # A folder dataset decoded into an empty cache, then the same run on the warm cache.
    root = make_tree(("train", "val"), per_class=8)
    overrides = [
        *tiny_overrides(tmp_path, "epochs=2", "model.drop_rate=0.2", "batch_size=6", "eval_batch_size=6")[1:],
        "data.dataset=folder",
        f"data.root={root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.subset_per_class=0",
        "data.test_subset_per_class=0",
    ]
    cold = _run(tmp_path / "cold", overrides)
    assert any((tmp_path / "cache").iterdir())
    warm = _run(tmp_path / "warm", overrides)
    _assert_same(cold, warm)


def test_evaluation_cadence_does_not_change_training(tmp_path, base):
    _assert_same(_run(tmp_path / "every", [*base, "eval_every=1"]), _run(tmp_path / "last", [*base, "eval_every=2"]))


def test_foreign_draws_from_the_global_rng_change_nothing(tmp_path, base, monkeypatch):
    """The family's catch-all: code run before data, model, epochs or evaluation may draw from the global RNG."""
    clean = _run(tmp_path / "clean", base)

    def drawing(fn):
        def wrapped(*args, **kwargs):
            torch.rand(17)  # what a DataLoader, a logger or a third-party hook may do
            out = fn(*args, **kwargs)
            torch.randn(5)
            return out

        return wrapped

    for module, name in [
        (build, "build_datasets"),  # where each is called from
        (loop, "build_optimizer"),
        (build, "build_train_augment"),
        (loop, "evaluate"),
        (loop, "log_metrics"),
    ]:
        monkeypatch.setattr(module, name, drawing(getattr(module, name)))
    torch.manual_seed(1234)  # and whatever state the process was left in
    _assert_same(clean, _run(tmp_path / "perturbed", base))


def test_named_streams_are_pure_functions_of_their_key():
    assert rng.stream_seed(7, "init") == 7  # the initial weights of every earlier augkd run are unchanged
    seeds = {rng.stream_seed(7, "epoch_seed", e, r) for e in range(3) for r in range(2)}
    assert len(seeds) == 6 and rng.stream_seed(7, "epoch_seed", 2, 1) in seeds
    with pytest.raises(ValueError, match="unknown random stream 'dropout'"):
        rng.stream_seed(7, "dropout")


def test_data_seed_keeps_the_augmented_stream_while_seed_varies_the_initialization(tmp_path, base):
    """``data_seed`` splits the run seed: the batches (order, crop, policy) follow it, the initial weights and
    dropout follow ``seed``; unset, it is the run seed and nothing changes (keys and batches as before)."""

    def first_batches(*extra: str) -> tuple[dict, list[torch.Tensor], dict[str, torch.Tensor]]:
        cfg = load_config(TrainConfig, None, [f"out_dir={tmp_path}", *base, *extra])
        run = loop.setup_run(cfg, quiet=True)
        batches = [b.images.clone() for _, b in zip(range(2), run.pipeline.batches(run.train_loader, 1), strict=False)]
        return build.pipeline_key(cfg), batches, {k: v.clone() for k, v in run.model.state_dict().items()}

    key0, batches0, weights0 = first_batches("seed=0")
    key0b, batches0b, _ = first_batches("seed=0", "data_seed=-1")
    assert key0 == key0b and all(torch.equal(a, b) for a, b in zip(batches0, batches0b, strict=True))
    key1, batches1, weights1 = first_batches("seed=1", "data_seed=0")
    assert key1 == key0 and all(torch.equal(a, b) for a, b in zip(batches0, batches1, strict=True))
    assert any(not torch.equal(weights0[k], weights1[k]) for k in weights0)  # another initialization
    key2, batches2, weights2 = first_batches("seed=0", "data_seed=5")
    assert key2 != key0 and not torch.equal(batches2[0], batches0[0])
    assert all(torch.equal(weights0[k], weights2[k]) for k in weights0)  # the same initialization
