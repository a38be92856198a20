#!/usr/bin/env bash
# Run hpcdl's checks: lint, then the test suite (real data from ../shared/data, real Horovod,
# and, when run as root, a real one-node SLURM cluster that this script starts).
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HPCDL_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ "$(id -u)" = 0 ] && [ "${HPCDL_NO_SLURM:-0}" != 1 ]; then
  bash slurm/start-test-cluster.sh
  export HPCDL_REQUIRE_SLURM=1   # from here on a missing cluster fails the SLURM tests
fi
ruff check hpcdl tests
ruff format --check hpcdl tests
python -m pytest "$@"
