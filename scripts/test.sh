#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the whole test suite.
# Extra arguments go to pytest, e.g.: bash scripts/test.sh -k mount -x
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
echo "test: .venv/bin/python -m pytest -q -p no:cacheprovider $*"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
