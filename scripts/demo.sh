#!/usr/bin/env bash
# The main job: train the CPU demo model on the shared CIFAR-10 (../shared/data/cifar10-jpg.zip).
# Extra arguments are config overrides, e.g. `scripts/demo.sh epochs=2 name=short`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec augkd train --config configs/cifar10-demo.yaml --overwrite "$@"
