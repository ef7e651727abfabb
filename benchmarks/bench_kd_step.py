"""One KD training step in isolation: augkd's ``DistillationTask`` against timm's ``LogitDistillationTask``.

Same student and teacher (``fastnet9``, channels-last, float32), one batch of random images, one thread, in one
process; interleaved, median of 5 after one warm-up. Also a plain step (cross-entropy only) and the teacher's
forward pass alone. Made to find where augkd's live KD loses to timm's at 224 px in ``augkd bench train``
(results/README.md).

Usage:
    python benchmarks/bench_kd_step.py                 # 16 images at 224 px
    python benchmarks/bench_kd_step.py --size 32 --batch-size 256
"""

from __future__ import annotations

import argparse
import json

import torch
from timm.task import DistillationTeacher, LogitDistillationTask
from torch import nn

from augkd.bench import interleaved_medians
from augkd.distill.loss import TopKKL
from augkd.distill.task import DistillationTask
from augkd.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cl = torch.channels_last
    stats = {"mean": (0.5,) * 3, "std": (0.25,) * 3}  # timm's KD reads the models' normalization

    def net() -> nn.Module:
        model = create_model("fastnet9", num_classes=10).to(memory_format=cl)
        model.pretrained_cfg = stats
        return model

    student, teacher = net(), net().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x = torch.randn(args.batch_size, 3, args.size, args.size).contiguous(memory_format=cl)
    y = torch.randint(0, 10, (args.batch_size,))
    ours = DistillationTask(teacher, TopKKL(3, 2.0, "renorm", True), 1.0, 0.1, "constant")
    theirs = LogitDistillationTask(
        student, DistillationTeacher(net()), criterion=nn.CrossEntropyLoss(label_smoothing=0.1),
        distill_loss_weight=1.0, task_loss_weight=1.0, temperature=2.0, verbose=False,
    )  # fmt: skip
    theirs.train()

    def teacher_forward() -> None:
        with torch.no_grad():
            teacher(x)

    steps = {
        "augkd_kd_step": lambda: ours(student, x, y, torch.arange(len(y)), 0)["loss"].backward(),
        "timm_kd_step": lambda: theirs(x, y)["loss"].backward(),
        "plain_step": lambda: nn.functional.cross_entropy(student(x), y, label_smoothing=0.1).backward(),
        "teacher_forward": teacher_forward,
    }
    report = {name: round(t, 3) for name, t in interleaved_medians(steps, rounds=5, warmup=1).items()}
    print(json.dumps({"size": args.size, "batch_size": args.batch_size, "threads": 1, "seconds": report}))


if __name__ == "__main__":
    main()
