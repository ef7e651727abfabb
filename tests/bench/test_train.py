"""``augkd bench train``: every contender trains for real and the ratios are the ones of the reported speeds."""

from __future__ import annotations

import math

import pytest

from augkd.bench.train import CONTENDERS, run_train_benchmark
from augkd.cli import build_parser


@pytest.mark.slow
def test_train_benchmark_runs_every_contender_at_32px(cache_dir, cifar10_zip) -> None:
    report = run_train_benchmark(
        32, steps=1, rounds=2, batch_size=16, data_dir=cifar10_zip.parent, cache_dir=str(cache_dir)
    )
    assert report["amp"] in ("float32", "bfloat16") and report["steps_per_round"] == 1
    for name in CONTENDERS:
        entry = report[name]
        assert len(entry["rounds"]) == 2 and all(s > 0 and math.isfinite(s) for s in entry["rounds"])
        assert entry["images_per_s"] == pytest.approx(sorted(entry["rounds"])[0] / 2 + sorted(entry["rounds"])[1] / 2)
    ratios = report["ratios"]
    speed = {name: report[name]["images_per_s"] for name in CONTENDERS}
    assert ratios["augkd_ra_vs_timm_ra"] == pytest.approx(speed["augkd_ra"] / speed["timm_ra"])
    assert ratios["augkd_ra_kd_vs_timm_ra_kd"] == pytest.approx(speed["augkd_ra_kd"] / speed["timm_ra_kd"])
    assert ratios["augkd_ra_kd_cache_cost_vs_plain"] == pytest.approx(speed["augkd_plain"] / speed["augkd_ra_kd_cache"])


@pytest.mark.slow
def test_cached_kd_runs_at_224px_through_the_stream_loader(cache_dir, woof_zip) -> None:
    contenders = ("augkd_plain", "augkd_ra_kd_cache")
    report = run_train_benchmark(
        224, steps=1, rounds=1, batch_size=4, workers=0, contenders=contenders, data_dir=woof_zip.parent,
        cache_dir=str(cache_dir),
    )  # fmt: skip
    assert all(report[name]["images_per_s"] > 0 for name in contenders)
    assert report["ratios"]["augkd_ra_kd_cache_cost_vs_plain"] > 0


def test_train_benchmark_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="image_size must be 32 or 224, got 64"):
        run_train_benchmark(64)
    with pytest.raises(ValueError, match="unknown contenders \\['timm_fast'\\]"):
        run_train_benchmark(32, contenders=["timm_fast"])
    with pytest.raises(ValueError, match="steps=0"):
        run_train_benchmark(32, steps=0)


def test_bench_train_is_a_cli_choice() -> None:
    args = build_parser().parse_args(["bench", "train", "--sizes", "32", "--steps", "4", "--repeats", "2", "--json"])
    assert (args.what, args.sizes, args.steps, args.repeats, args.json) == ("train", [32], 4, 2, True)
