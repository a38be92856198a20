#!/usr/bin/env bash
# Stop what start-two-node-cluster.sh started: jobs, the node daemons (and whatever still runs in
# a node's namespace), slurmctld, slurmdbd, mariadb, munged; then remove the node namespaces, the
# bridge and the tagged /etc/hosts lines. `--purge` also wipes this cluster's Slurm state, logs
# and accounting tables (the one-node cluster's are kept). Idempotent. Run as root.
#
#   bash slurm/stop-two-node-cluster.sh [--purge]
set -uo pipefail
NODES=${SLURM_NODES:-2}
CLUSTER=hpcdltwonode
BRIDGE=slurmbr0
STATE=/var/lib/slurm/twonode
LOGS=/var/log/slurm/twonode
HOSTS_TAG="# hpcdl two-node cluster"
PURGE=0; [ "${1:-}" = --purge ] && PURGE=1
log() { echo "[two-node $(date +%T)] $*"; }
stop_pid() { # stop_pid NAME PID: TERM, wait up to 20 s, then KILL
  kill -0 "$2" 2>/dev/null || return 0
  log "stopping $1 (pid $2)"; kill "$2" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.2; done
  log "$1 still alive: SIGKILL"; kill -9 "$2" 2>/dev/null
}
stop_pidfile() { # stop_pidfile NAME PIDFILE
  [ -s "$2" ] && stop_pid "$1" "$(cat "$2")"
  rm -f "$2"
}
[ "$(id -u)" = 0 ] || { echo "stop-two-node-cluster.sh: run as root" >&2; exit 1; }
# the nodes: n1..nN and every node an earlier start added to /etc/hosts
NODE_NAMES=$( (seq 1 "$NODES" | sed 's/^/n/'; grep -F "$HOSTS_TAG" /etc/hosts | awk '{print $2}') | sort -u)

# 1. jobs first, while slurmctld can still tell the slurmds to end them
if [ -s /run/slurmctld.pid ] && kill -0 "$(cat /run/slurmctld.pid)" 2>/dev/null; then
  ids=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${ids// }" ]; then
    log "cancelling jobs: $ids"; scancel $ids
    for _ in $(seq 1 50); do [ -z "$(squeue -h -t R,CG 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi

# 2. node daemons, then whatever still runs in a node's namespace (slurmstepd, tasks)
for n in $NODE_NAMES; do stop_pidfile "slurmd $n" "/run/slurmd-$n.pid"; done
for n in $NODE_NAMES; do
  [ -e "/run/netns/$n" ] || continue
  for p in $(ip netns pids "$n" 2>/dev/null); do stop_pid "$(ps -o comm= -p "$p") in $n" "$p"; done
done

# 3. controller, accounting, munge
stop_pidfile slurmctld /run/slurmctld.pid
stop_pidfile slurmdbd /run/slurmdbd.pid
if [ $PURGE = 1 ] && mysqladmin ping >/dev/null 2>&1; then
  # `sacctmgr delete cluster` only marks it deleted and keeps its job tables: drop them instead
  log "dropping cluster $CLUSTER's accounting tables"
  tables=$(mysql -N -e "SELECT GROUP_CONCAT(table_name) FROM information_schema.tables
                        WHERE table_schema='slurm_acct_db' AND table_name LIKE '${CLUSTER}\\_%'")
  [ -n "$tables" ] && [ "$tables" != NULL ] && mysql slurm_acct_db -e "DROP TABLE $tables"
  mysql slurm_acct_db -e "DELETE FROM cluster_table WHERE name='$CLUSTER'" 2>/dev/null
fi
if mysqladmin ping >/dev/null 2>&1; then log "stopping mariadb"; service mariadb stop >/dev/null 2>&1 || mysqladmin shutdown; fi
stop_pidfile munged /run/munge/munged.pid

# 4. network: namespaces (deleting one deletes its veth pair), bridge, /etc/hosts lines
for n in $NODE_NAMES; do
  if [ -e "/run/netns/$n" ]; then log "removing network namespace $n"; ip netns del "$n"; fi
  ip link del "veth-$n" 2>/dev/null  # namespaces are torn down asynchronously
done
if ip link show "$BRIDGE" >/dev/null 2>&1; then log "removing bridge $BRIDGE"; ip link del "$BRIDGE"; fi
if grep -qF "$HOSTS_TAG" /etc/hosts; then
  log "/etc/hosts: removing the lines tagged '$HOSTS_TAG'"
  grep -vF "$HOSTS_TAG" /etc/hosts > /etc/hosts.new; cat /etc/hosts.new > /etc/hosts; rm -f /etc/hosts.new
fi
[ $PURGE = 1 ] && { log "purging state and logs"; rm -rf "${STATE:?}" "${LOGS:?}"; }
left=$(ps -eo pid=,stat=,comm= | awk '$2 !~ /^Z/ && $3 ~ /^(slurmctld|slurmd|slurmdbd|slurmstepd|munged|mariadbd)$/ {printf "%s(%s) ", $3, $1}')
if [ -n "${left// }" ]; then log "WARNING still running: $left"; else log "stopped"; fi
