#!/usr/bin/env bash
# The float32 plain demo (configs/cifar10-demo.yaml) for N epochs with augkd at an earlier commit and at this
# checkout, interleaved (before, now, before, now, ...), each in a fresh process; prints each run's wall time and
# its last metrics line (images/s, train loss, test top-1) so speed and numbers can be compared.
#
# Usage: benchmarks/demo_before_after.sh BEFORE_WORKTREE [PAIRS=2] [EPOCHS=1] [OUT=/tmp/demo-before-after]
#   BEFORE_WORKTREE: a git worktree of the earlier commit (git worktree add --detach DIR COMMIT), whose
#   ../shared/data resolves like this checkout's.
set -euo pipefail
NOW="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BEFORE="$(cd "$1" && pwd)"
PAIRS="${2:-2}"
EPOCHS="${3:-1}"
OUT="${4:-/tmp/demo-before-after}"
source "$NOW/.venv/bin/activate"
unset OMP_WAIT_POLICY GOMP_SPINCOUNT KMP_BLOCKTIME  # each side's own threading defaults
for pair in $(seq 1 "$PAIRS"); do
  for side in before now; do
    if [ "$side" = before ]; then dir="$BEFORE"; else dir="$NOW"; fi
    echo "== $side $pair start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    start=$(date +%s.%N)
    (cd "$dir" && PYTHONPATH="$dir/src" augkd train --config configs/cifar10-demo.yaml epochs="$EPOCHS" \
        name="$side-$pair" out_dir="$OUT" --overwrite > "$OUT-$side-$pair.log" 2>&1)
    end=$(date +%s.%N)
    echo "== $side $pair wall $(python3 -c "print(round($end - $start, 1))") s"
    tail -1 "$OUT/$side-$pair/metrics.jsonl"
  done
done
