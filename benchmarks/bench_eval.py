"""Evaluation cost of the main job's KD student: the teacher's test logits memoized or not, and the eval batch size.

Two measurements in one process, one thread, on the main job's 10,000 test images (``configs/demo/student.yaml``
with its committed teacher), median of 3 interleaved rounds:

- ``memo``: :func:`augkd.train.loop.evaluate` with the teacher as reference, without and with
  :class:`~augkd.train.loop.EvalMemo` (filled by one untimed pass first), and without a reference at all;
- ``batch_size``: the student alone at evaluation batches of 1000, 500, 250 and 100.

Usage:
    python benchmarks/bench_eval.py            # prints JSON
"""

from __future__ import annotations

import json
import tempfile

import torch

from augkd.bench import interleaved_medians
from augkd.config import load_config
from augkd.data import DeviceLoader
from augkd.train.config import TrainConfig
from augkd.train.loop import EvalMemo, evaluate, setup_run


def _median_times(contenders: dict, rounds: int = 3) -> dict[str, float]:
    return {name: round(t, 2) for name, t in interleaved_medians(contenders, rounds).items()}


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["kd.teacher=results/demo/teacher/best.pt", f"out_dir={tmp}"]
        run = setup_run(load_config(TrainConfig, "configs/demo/student.yaml", overrides), quiet=True)
        args = (run.model, run.eval_loader, run.normalize, run.amp_dtype, run.cfg.eval_flip)
        memo = EvalMemo()
        evaluate(*args, reference=run.reference, memo=memo)  # fills the memo
        memo_s = _median_times(
            {
                "no_memo": lambda: evaluate(*args, reference=run.reference),
                "memo": lambda: evaluate(*args, reference=run.reference, memo=memo),
                "no_reference": lambda: evaluate(*args),
            }
        )
        test_set = run.eval_loader.dataset

        def at(bs: int):
            loader = DeviceLoader(test_set, bs, shuffle=False, drop_last=False)
            return lambda: evaluate(run.model, loader, run.normalize, None, False)

        batch_s = _median_times({str(bs): at(bs) for bs in (1000, 500, 250, 100)})
    print(json.dumps({"images": len(test_set), "threads": 1, "memo_seconds": memo_s, "batch_seconds": batch_s}))


if __name__ == "__main__":
    main()
