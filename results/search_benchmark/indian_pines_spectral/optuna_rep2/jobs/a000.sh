#!/bin/bash
# hpcdl local job for sweep optuna_rep2 (array of 9 point(s)), written 2026-12-02T02:54:54+00:00.
# This is the exact script that was submitted; it is kept next to the sweep's logs.

set -uo pipefail
# which point this array task runs: line INDEX+1 of the points file (run directories)
INDEX=${1:?usage: job.sh ARRAY_INDEX}
POINTS_FILE=/work/main/results/search_benchmark/indian_pines_spectral/optuna_rep2/jobs/a000.points
RUN_DIR=$(sed -n "$((INDEX + 1))p" "$POINTS_FILE")
if [ -z "$RUN_DIR" ]; then echo "hpcdl: no point for array index $INDEX in $POINTS_FILE" >&2; exit 2; fi
export HPCDL_REQUEUE_MAX=0
export HPCDL_DATA_DIR=/work/shared/data
cd "$RUN_DIR" || exit 2
# Open MPI 4.1 cannot start a 1-rank run when TMPDIR contains [ or ] (PBS array subjobs get
# /var/tmp/pbs.ID[INDEX].server): training gets a bracket-free link to the same folder
case "${TMPDIR:-}" in
*[][]*) ln -sfn "$TMPDIR" "$RUN_DIR/.tmp" && export TMPDIR="$RUN_DIR/.tmp" ;;
esac
echo "== $(date -Is) local job local-$$ on $(hostname): 1 rank(s)" >> job.out
# a trial slot of an adaptive search: the worker asks the study for a trial (or reattaches to
# this slot's trial after a requeue), writes its config, runs training as its child, reports the
# metric after every epoch and stops it when the pruner says so; signals are passed on
exec /work/main/.venv/bin/python -m hpcdl trial "$RUN_DIR" -- /work/main/.venv/bin/python -m hpcdl train "$RUN_DIR/config.yaml" --run-dir "$RUN_DIR" >> "$RUN_DIR/job.out" 2>&1
