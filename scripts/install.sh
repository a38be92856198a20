#!/usr/bin/env bash
# Install hpcdl and everything it needs on a fresh Debian 12 machine (run as root, idempotent).
#
#   bash scripts/install.sh            # system packages + .venv with TensorFlow, Horovod, hpcdl
#   HPCDL_VENV=/path bash scripts/install.sh
#
# What is pinned and why (measured on Debian 12 / Python 3.11, see README "Install"):
# - tensorflow-cpu 2.18.1: the newest TensorFlow that Horovod 0.28.1 still compiles against
#   (2.19+ fails in horovod/tensorflow/xla_mpi_ops.cc).
# - tf-keras 2.18.0 with TF_USE_LEGACY_KERAS=1 (hpcdl sets it): Keras 3 silently stops Horovod's
#   gradient averaging. Installed with --no-deps, or it pulls the full `tensorflow` over tensorflow-cpu.
# - horovod 0.28.1: the newest release; built from source against the installed TensorFlow.
# - cmake<4: CMake 4 refuses Horovod's bundled Gloo (needs CMake < 3.5 compatibility).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HPCDL_VENV:-.venv}
log() { echo "[install $(date +%T)] $*"; }

# 1. system packages: Open MPI (mpirun, headers for mpi4py/Horovod), compilers, PMIx for srun --mpi=pmix
PKGS=(build-essential openmpi-bin libopenmpi-dev libpmix2 python3-venv python3-dev git)
MISSING=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || MISSING+=("$p")
done
if [ ${#MISSING[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "install.sh: missing system packages ${MISSING[*]}; run as root" >&2; exit 1; fi
  log "apt-get install ${MISSING[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends install "${MISSING[@]}" >/dev/null
fi

# 2. virtual environment
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" -U pip "setuptools<81" wheel

# 3. TensorFlow (CPU build here; see README for GPU clusters) + Keras 2 API
"${PIP[@]}" "cmake<4" "tensorflow-cpu==2.18.1" mpi4py
"${PIP[@]}" --no-deps "tf-keras==2.18.0"

# 4. Horovod, compiled against that TensorFlow (skipped when a working build is already there)
if "$VENV/bin/python" -c 'import horovod.tensorflow' >/dev/null 2>&1; then
  log "horovod already built with TensorFlow support"
else
  # pip caches the built wheel; it is keyed by the sdist only, which is safe while TensorFlow stays pinned
  log "building horovod 0.28.1 (takes 3-4 minutes on 2 cores)"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
  HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
    "${PIP[@]}" --no-build-isolation "horovod==0.28.1"
fi

# 5. hpcdl itself (editable) with its test tools
"${PIP[@]}" -e ".[test]"
"$VENV/bin/python" -c 'import hpcdl.distributed as d; d.check_horovod()' \
  && log "done: activate with  . $VENV/bin/activate"
