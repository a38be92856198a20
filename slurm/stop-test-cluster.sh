#!/usr/bin/env bash
# Stop what start-test-cluster.sh started; --purge also wipes Slurm state and the accounting DB.
set -uo pipefail
log() { echo "[test-cluster $(date +%T)] $*"; }
stop() { # stop NAME PIDFILE
  [ -s "$2" ] || return 0
  local p; p=$(cat "$2")
  if kill -0 "$p" 2>/dev/null; then
    log "stopping $1"; kill "$p"
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p"
  fi
  rm -f "$2"
}
if [ -s /run/slurmctld.pid ] && kill -0 "$(cat /run/slurmctld.pid)" 2>/dev/null; then
  ids=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  [ -n "${ids// }" ] && scancel $ids
fi
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop slurmdbd /run/slurmdbd.pid
if [ "${1:-}" = --purge ] && mysqladmin ping >/dev/null 2>&1; then
  mysql -e 'DROP DATABASE IF EXISTS slurm_acct_db'
fi
mysqladmin ping >/dev/null 2>&1 && { service mariadb stop >/dev/null 2>&1 || mysqladmin shutdown; }
stop munged /run/munge/munged.pid
[ "${1:-}" = --purge ] && rm -rf /var/lib/slurm/slurmctld/* /var/lib/slurm/slurmd/* /var/log/slurm/*
log "stopped"
