#!/bin/bash
# hpcdl local job for sweep grid_rep1 (array of 9 point(s)), written 2026-12-02T02:41:37+00:00.
# This is the exact script that was submitted; it is kept next to the sweep's logs.

set -uo pipefail
# which point this array task runs: line INDEX+1 of the points file (run directories)
INDEX=${1:?usage: job.sh ARRAY_INDEX}
POINTS_FILE=/work/main/results/search_benchmark/indian_pines_spectral/grid_rep1/jobs/a000.points
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
# exec: the scheduler's signals (time-limit warning, cancel) reach the training process directly
exec /work/main/.venv/bin/python -m hpcdl train "$RUN_DIR/config.yaml" --run-dir "$RUN_DIR" >> job.out 2>&1
