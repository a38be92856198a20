#!/bin/bash
# hpcdl pbs job for sweep demo (collect after the arrays), written 2026-01-01T00:00:00+00:00.
# This is the exact script that was submitted; it is kept next to the sweep's logs.
#PBS -N hpcdl-demo-c000
#PBS -l nodes=1:ppn=1,walltime=00:30:00
#PBS -q gpuq
#PBS -A proj42
#PBS -j oe
#PBS -m abe

set -uo pipefail
export HPCDL_DATA_DIR=/scratch/me/data
exec PYTHON -m hpcdl collect /scratch/me/results/demo
