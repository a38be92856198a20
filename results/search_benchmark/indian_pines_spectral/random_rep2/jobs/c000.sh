#!/bin/bash
# hpcdl local job for sweep random_rep2 (collect after the arrays), written 2026-12-02T02:52:35+00:00.
# This is the exact script that was submitted; it is kept next to the sweep's logs.

set -uo pipefail
export HPCDL_DATA_DIR=/work/shared/data
exec /work/main/.venv/bin/python -m hpcdl collect /work/main/results/search_benchmark/indian_pines_spectral/random_rep2
