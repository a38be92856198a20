#!/bin/bash
# hpcdl pbs job for sweep demo (array of 12 point(s)), written 2026-01-01T00:00:00+00:00.
# This is the exact script that was submitted; it is kept next to the sweep's logs.
#PBS -N hpcdl-demo-a000
#PBS -t 0-11%4
#PBS -l nodes=2:ppn=8:gpus=2,walltime=02:00:00,mem=32gb
#PBS -r y
#PBS -q gpuq
#PBS -A proj42
#PBS -j oe
#PBS -m abe

set -uo pipefail
# which point this array task runs: line INDEX+1 of the points file (run directories)
INDEX=${PBS_ARRAYID:-${SLURM_ARRAY_TASK_ID:-0}}
POINTS_FILE=/scratch/me/results/demo/jobs/a000.points
RUN_DIR=$(sed -n "$((INDEX + 1))p" "$POINTS_FILE")
if [ -z "$RUN_DIR" ]; then echo "hpcdl: no point for array index $INDEX in $POINTS_FILE" >&2; exit 2; fi
export HPCDL_REQUEUE_MAX=0
export HPCDL_DATA_DIR=/scratch/me/data
cd "$RUN_DIR" || exit 2
# Open MPI 4.1 cannot start a 1-rank run when TMPDIR contains [ or ] (PBS array subjobs get
# /var/tmp/pbs.ID[INDEX].server): training gets a bracket-free link to the same folder
case "${TMPDIR:-}" in
*[][]*) ln -sfn "$TMPDIR" "$RUN_DIR/.tmp" && export TMPDIR="$RUN_DIR/.tmp" ;;
esac
echo "== $(date -Is) pbs job ${PBS_JOBID:-${SLURM_JOB_ID:-}} on $(hostname): 4 rank(s)" >> job.out
# exec: the scheduler's signals (time-limit warning, cancel) reach the training process directly
exec mpirun -np 4 ${PBS_NODEFILE:+--hostfile "$PBS_NODEFILE"} PYTHON -m hpcdl train "$RUN_DIR/config.yaml" --run-dir "$RUN_DIR" >> job.out 2>&1
