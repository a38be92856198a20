#!/usr/bin/env bash
# Run hpcdl's checks: lint, then the test suite (real data from ../shared/data, real Horovod).
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HPCDL_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ruff check hpcdl tests
ruff format --check hpcdl tests
python -m pytest "$@"
