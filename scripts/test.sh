#!/usr/bin/env bash
# Run hpcdl's checks: lint, then the test suite (real data from ../shared/data, real Horovod,
# and, when run as root, a real one-node SLURM cluster that this script starts).
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HPCDL_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ "$(id -u)" = 0 ] && ! { command -v chromium && command -v tmux; } >/dev/null; then
  # Debian's Chromium renders the HTML report in a test (headless); tmux is the real terminal
  # the live progress display is tested in
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q \
    --no-install-recommends install chromium fonts-dejavu-core tmux >/dev/null
fi
command -v tmux >/dev/null && export HPCDL_REQUIRE_TMUX=1
command -v chromium >/dev/null && export HPCDL_REQUIRE_BROWSER=1
if [ "$(id -u)" = 0 ] && [ "${HPCDL_NO_SLURM:-0}" != 1 ]; then
  bash slurm/start-test-cluster.sh
  export HPCDL_REQUIRE_SLURM=1   # from here on a missing cluster fails the SLURM tests
fi
ruff check hpcdl tests benchmarks
ruff format --check hpcdl tests benchmarks
python -m pytest "$@"
