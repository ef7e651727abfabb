"""augkd's pieces in a plain PyTorch loop: a replayable RandAugment policy, Mixup/CutMix and top-K KD.

    python examples/own_loop.py --teacher runs/cifar10-teacher/best.pt --epochs 2 --subset 100

Everything random is keyed by (seed, epoch, sample id), so two runs of this script train the same network.
"""

import argparse

import torch

from augkd.augment import build_policy
from augkd.augment.base import RandomCropFlip
from augkd.augment.mix import Mixer
from augkd.data import DeviceLoader, build_datasets, dataset_stats
from augkd.data.config import DataConfig
from augkd.data.pipeline import Normalize
from augkd.distill.task import Distiller
from augkd.distill.teacher import load_teacher
from augkd.models import create_model

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--teacher", required=True, help="an augkd run checkpoint (best.pt) trained on CIFAR-10")
parser.add_argument("--data", default="../shared/data/cifar10-jpg.zip")
parser.add_argument("--subset", type=int, default=0, help="training images per class (0: all)")
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--cache-dir", default=".cache/augkd", help="where the decoded images are kept")
args = parser.parse_args()
torch.manual_seed(0)

data = DataConfig(
    root=args.data, cache_dir=args.cache_dir, subset_per_class=args.subset, test_subset_per_class=args.subset
)
train_set, test_set = build_datasets(data, quiet=True)
stats = dataset_stats(data)
normalize = Normalize(stats["mean"], stats["std"])
crop, policy = RandomCropFlip(32, padding=4, seed=0), build_policy("rand-m9-mstd0.5-inc1", 32, seed=0)
mixer = Mixer(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=10, label_smoothing=0.1, seed=0)

student = create_model("fastnet9", num_classes=10, width=16)
teacher = load_teacher(args.teacher, 10, student_norm=(stats["mean"], stats["std"]))
distiller = Distiller(teacher, k=3, temperature=2.0, lam=1.0)  # the paper's CIFAR-10 values
optimizer = torch.optim.SGD(student.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
loader = DeviceLoader(train_set, args.batch_size, shuffle=True, drop_last=True, seed=0)

for epoch in range(args.epochs):
    student.train()
    loader.set_epoch(epoch)
    for batch in loader:
        images = policy(crop(batch.images, batch.indices, epoch), batch.indices, epoch)  # uint8 in, uint8 out
        images, targets = mixer(images, batch.labels, batch.indices, epoch)  # partner: image B-1-i
        x = normalize(images)
        loss = distiller(student(x), x, targets)  # CE on the soft targets + lambda * top-K KL
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    student.eval()
    with torch.no_grad():
        logits = torch.cat([student(normalize(chunk)) for chunk in test_set.images.split(500)])
        top1 = (logits.argmax(1) == test_set.labels).float().mean().item() * 100
    kd, agree = distiller.last["kd_loss"].item(), distiller.last["agree_top1"].item()
    print(f"epoch {epoch + 1}: loss {loss.item():.3f} (kd {kd:.3f}, agreement {agree:.0f}%), test top-1 {top1:.2f}%")
