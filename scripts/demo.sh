#!/usr/bin/env bash
# The main job: the paper in miniature on the shared CIFAR-10 (../shared/data/cifar10-jpg.zip).
#
# Two fastnet9 students train side by side (one CPU thread each) for 10 epochs on a 10,000-image subset with heavy
# augmentation (the paper's geometric space at M=2): one alone, one with top-K KD from the committed teacher
# results/demo/teacher/best.pt (made by `augkd train --config configs/demo/teacher.yaml`). Then it prints each
# student's test error and the KD gain, and writes runs/demo/main/report/curves.png (the test curves).
# Its 3-seed measurement, with the crop + flip reference, is results/demo/.
#
#   scripts/demo.sh                 # the main job
#   scripts/demo.sh epochs=2        # extra arguments are config overrides of both students
#   scripts/demo.sh --plain [k=v]   # the earlier main job: one fastnet9 on all of CIFAR-10 with crop + flip
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
if [ "${1:-}" = "--plain" ]; then
  shift
  exec augkd train --config configs/cifar10-demo.yaml --overwrite "$@"
fi
OUT=runs/demo/main
rm -rf "$OUT"  # a fresh pair of runs each time, like `augkd train --overwrite`
start=$(date +%s)
augkd sweep --config configs/demo/student.yaml --grid kd=off,on --seeds 0 --jobs 2 --out "$OUT" --no-report "$@"
augkd report "$OUT" --out "$OUT/report" \
  --title "augkd main job: fastnet9, 10,000 CIFAR-10 images, 10 epochs, geo-n2-m2, with and without top-K KD" >/dev/null
python - "$OUT" "$(( $(date +%s) - start ))" <<'EOF'
import json
import sys
from pathlib import Path

out, seconds = Path(sys.argv[1]), int(sys.argv[2])
summary = {kd: json.loads((out / f"kd-{kd}" / "summary.json").read_text()) for kd in ("off", "on")}
error = {kd: s["final_error"] for kd, s in summary.items()}
teacher = json.loads(Path("results/demo/teacher/summary.json").read_text())["final_error"]
s = summary["on"]
print()
print(f"| student ({s['model']}, {s['policy']}, {s['epochs']} epochs, {s['train_images']} images) | test error (%) |")
print("|---|---|")
print(f"| heavy augmentation alone | {error['off']:.2f} |")
kd = s["kd"]
print(f"| heavy augmentation + top-K KD (K={kd['k']}, lambda={kd['lambda']:g}, T={kd['temperature']:g}) | {error['on']:.2f} |")
print(f"| **KD gain** | **{error['off'] - error['on']:+.2f}** |")
print(f"\nteacher (fastnet9, AutoAugment, 30 epochs): {teacher:.2f}% error; 3-seed figures: results/demo/README.md")
print(f"test curves: {out / 'report' / 'curves.png'}; full table: {out / 'report' / 'report.md'}; {seconds} s in all")
EOF
