#!/usr/bin/env bash
# The test command: lint, then the test suite (on the real images in ../shared/data).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
ruff check .
ruff format --check .
exec python -m pytest "$@"
