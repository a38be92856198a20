#!/usr/bin/env bash
# Run hpcdl's checks: lint, then the test suite (real data from ../shared/data, real Horovod).
# As root it runs the suite twice, each part on a real SLURM cluster that this script starts:
#   1. `pytest -m "not twonode"` on the one-node cluster (slurm/start-test-cluster.sh),
#   2. `pytest -m twonode` on the two-node cluster (slurm/start-two-node-cluster.sh), which
#      replaces the one-node one (both write /etc/slurm/slurm.conf); skipped when the pytest
#      arguments select no twonode test.
# Both parts run even if the first fails; the script fails if either did. Not root, or with
# HPCDL_NO_SLURM=1: one pytest run, the SLURM tests skip. The two-node cluster stays up
# afterwards (bash slurm/stop-two-node-cluster.sh stops it).
#   bash scripts/test.sh [pytest args]      # the args go to both runs, e.g. -q -k "slurm"
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
ruff check hpcdl tests benchmarks
ruff format --check hpcdl tests benchmarks

if [ "$(id -u)" != 0 ] || [ "${HPCDL_NO_SLURM:-0}" = 1 ]; then
  exec python -m pytest "$@"
fi

# pytest's exit code 5 means "no test selected": not a failure for one of the two parts
part() { # part NAME PYTEST-ARGS...: run pytest, remember a failure
  local name=$1 code=0; shift
  python -m pytest "$@" || code=$?
  [ "$code" = 5 ] && code=0
  [ "$code" = 0 ] || FAILED+=("$name (pytest exit $code)")
}
FAILED=()
bash slurm/start-test-cluster.sh
HPCDL_REQUIRE_SLURM=1 part "one-node part (-m 'not twonode')" -m "not twonode" "$@"
selected=0; python -m pytest --collect-only -q -m twonode "$@" >/dev/null 2>&1 || selected=$?
if [ "$selected" = 5 ]; then
  echo "[test] no twonode test selected: the two-node cluster is not started"
elif bash slurm/start-two-node-cluster.sh; then
  HPCDL_REQUIRE_TWONODE=1 part "two-node part (-m twonode)" -m twonode "$@"
else
  FAILED+=("the two-node cluster did not start (slurm/start-two-node-cluster.sh)")
fi
if [ ${#FAILED[@]} -gt 0 ]; then
  printf '[test] FAILED: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
echo "[test] both parts passed"
