#!/usr/bin/env bash
# Bring up a real two-node SLURM cluster on ONE Debian 12 machine (no systemd needed), for the
# multi-node tests (pytest -m twonode) and CI: munge, MariaDB + slurmdbd (so `sacct` works) and
# slurmctld in the root network namespace, and one slurmd per node, each in its own network
# namespace (own address) and UTS namespace (own hostname), joined by a Linux bridge:
#
#   root ns:  bridge slurmbr0 10.123.0.1/24   slurmctld :6817, slurmdbd :6819, sbatch/sacct/...
#   netns n1: eth0 10.123.0.11/24, hostname n1   slurmd -N n1 :6818
#   netns n2: eth0 10.123.0.12/24, hostname n2   slurmd -N n2 :6818
#
# The namespaces share the file system (munge's socket, spool, the venv, results), as nodes
# share one on a cluster. Traffic stays on 127.0.0.0/8 and the bridge's 10.123.0.0/24: the node
# namespaces have no default route and nothing is NATed. Open MPI 4.1 (srun --mpi=pmix, or
# mpirun inside sbatch) and Horovod reach across the nodes with no MCA setting: each node has
# only lo and eth0. It writes /etc/slurm/slurm.conf like slurm/start-test-cluster.sh, so only one
# of the two clusters runs at a time; each start script stops the other's slurmd.
# Idempotent: re-running creates or starts only what is missing (a node brought down in a test
# comes back: link up, stale PMIx sockets removed, slurmd started). Run as root.
#
#   bash slurm/start-two-node-cluster.sh        # ~5 s once the packages are installed
#   bash slurm/stop-two-node-cluster.sh [--purge]
#
# Knobs: SLURM_NODES=N (default 2, at most 9: n1..nN), SLURM_NET=A.B.C (default 10.123.0),
#   SLURM_CPUS_PER_NODE=N (default: all CPUs of the machine on every node, oversubscribed),
#   SLURM_FAKE_GPUS=N (default 0: N fake gres/gpu per node), SLURM_ACCOUNTING=slurmdbd|none.
#
# What this sandbox needs (Slurm 22.05, found when the recipe was made):
# - `nsenter --net` + `unshare --uts` start each slurmd, not `ip netns exec`: the latter remounts
#   /sys, which hides /sys/fs/cgroup, and slurmd then fails ("No filesystem mounted on
#   /sys/fs/cgroup") even with proctrack/linuxproc + task/none.
# - TmpFS per node (%n): mpi/pmix creates its per-step directory there, and with one /tmp for
#   all nodes the second node's step fails ("pmixp_mkdir: Cannot create directory
#   /tmp/spmix_appdir_0_5.0: File exists").
# - A killed slurmstepd (a crashed node) leaves its PMIx socket in the node's spool dir, and the
#   requeued job (same job and step id) then fails there ("pmixp_usock_create_srv: Cannot bind()
#   UNIX socket .../stepd.slurm.pmix.J.S: Address in use"): a node with nothing running in its
#   namespace is cleaned like a reboot before its slurmd starts.
# - No CommunicationParameters=NoCtldInAddrAny,NoInAddrAny (the one-node cluster has them): with
#   them slurmctld, slurmdbd and srun bind to what `hostname` resolves to (127.0.0.1), which the
#   namespaces cannot reach; without them they listen on their namespace's addresses.
set -euo pipefail

NODES=${SLURM_NODES:-2}
NET=${SLURM_NET:-10.123.0}
CPUS=${SLURM_CPUS_PER_NODE:-$(nproc)}
ACCT=${SLURM_ACCOUNTING:-slurmdbd}
FAKE_GPUS=${SLURM_FAKE_GPUS:-0}
CLUSTER=hpcdltwonode
BRIDGE=slurmbr0
CTL_ADDR=$NET.1
CTL=$(hostname -s)
STATE=/var/lib/slurm/twonode  # own state and logs: the one-node cluster keeps its own
LOGS=/var/log/slurm/twonode
HOSTS_TAG="# hpcdl two-node cluster"  # marks the /etc/hosts lines this script adds
LOG_TAG=two-node
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ "$(id -u)" = 0 ] || { echo "start-two-node-cluster.sh: run as root" >&2; exit 1; }
[[ $NODES =~ ^[1-9]$ ]] || { echo "start-two-node-cluster.sh: SLURM_NODES must be 1..9" >&2; exit 1; }
NODE_NAMES=(); for i in $(seq 1 "$NODES"); do NODE_NAMES+=("n$i"); done
addr() { echo "$NET.1${1#n}"; }  # n1 -> A.B.C.11
NODELIST="n[1-$NODES]"

# 1. packages (iproute2: ip netns, bridge, veth; util-linux: nsenter, unshare)
PKGS=(slurmctld slurmd slurm-client munge openmpi-bin libpmix2 iproute2 util-linux)
[ "$ACCT" = slurmdbd ] && PKGS+=(slurmdbd mariadb-server)
install_missing "${PKGS[@]}"

# 2. network: a bridge with the controller's address; per node a namespace holding one end of a
#    veth pair (eth0 inside), the other end on the bridge. Loopback up; no default route.
ip link show "$BRIDGE" >/dev/null 2>&1 || { log "creating bridge $BRIDGE ($CTL_ADDR/24)"; ip link add "$BRIDGE" type bridge; }
ip -4 addr show dev "$BRIDGE" | grep -q "inet $CTL_ADDR/" || ip addr add "$CTL_ADDR/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for n in "${NODE_NAMES[@]}"; do
  [ -e "/run/netns/$n" ] || { log "creating network namespace $n ($(addr "$n")/24)"; ip netns add "$n"; }
  if ! ip -n "$n" link show eth0 >/dev/null 2>&1; then
    ip link del "veth-$n" 2>/dev/null || true  # the half left by a deleted namespace
    ip link add "veth-$n" type veth peer name eth0 netns "$n"
  fi
  ip link set "veth-$n" master "$BRIDGE" up
  ip -n "$n" link set lo up
  ip -n "$n" -4 addr show dev eth0 | grep -q "inet $(addr "$n")/" || ip -n "$n" addr add "$(addr "$n")/24" dev eth0
  ip -n "$n" link set eth0 up  # also what brings a node back after a test took its link down
done

# 3. names: every node name resolves to its namespace's address (Slurm, mpirun's orted, Horovod).
#    The lines are tagged so that the stop script removes exactly these.
for n in "${NODE_NAMES[@]}"; do
  line="$(addr "$n") $n $HOSTS_TAG"
  grep -qxF "$line" /etc/hosts && continue
  if grep -qE "^[^#]*[[:space:]]$n([[:space:]]|\$)" /etc/hosts; then
    echo "start-two-node-cluster.sh: /etc/hosts maps the node name $n elsewhere; free it first" >&2; exit 1
  fi
  echo "$line" >> /etc/hosts; log "/etc/hosts: added '$line'"
done
getent hosts "$CTL" >/dev/null || echo "127.0.0.1 $CTL" >> /etc/hosts

# 4. munge: its socket (/run/munge) is on the shared file system: one munged serves every node
start_munge
install -d -o slurm -g slurm -m 0755 "$STATE" "$STATE/slurmctld" /var/log/slurm "$LOGS"
install -d -o root -g root -m 0755 /etc/slurm
for n in "${NODE_NAMES[@]}"; do
  install -d -o root -g root -m 0755 "$STATE/slurmd-$n"
  install -d -o root -g root -m 1777 "$STATE/tmp-$n"
done

# 5. accounting: MariaDB + slurmdbd. slurmdbd listens on the root namespace's addresses (no
#    NoInAddrAny), so that sacct inside jobs (the collect job) reaches it at the bridge address.
[ "$ACCT" = slurmdbd ] && start_slurmdbd "$CTL_ADDR"  # the one-node cluster's is restarted
ACCT_CONF=$(accounting_conf "$CTL_ADDR")

# 6. slurm.conf. The settings the tests rely on are the one-node cluster's: JobRequeue=1 (jobs
#    requeue after a node failure), OverTimeLimit=0, sched_interval=2, ReturnToService=2 (a node
#    that comes back is used again), DefMemPerCPU, kill_invalid_depend. Besides:
#  - SlurmctldHost: this host's name (slurmctld checks it) at the bridge's address.
#  - %n: each slurmd its own spool dir, pid file, log and TmpFS (see the header).
#  - SlurmdTimeout=10: a node that stops answering is DOWN (NODE_FAIL, its jobs requeued) after
#    10-15 s instead of the default 300 s; slurmctld pings every SlurmdTimeout/3 s.
#  - every node sees the whole machine: CPUs=$CPUS each, 90 % of the memory shared out.
MEM=$(( $(hardware RealMemory) * 9 / 10 / NODES ))
if [ "$CPUS" = "$(hardware CPUs)" ]; then  # the real topology, so that slurmd's report matches
  CPU_CONF="CPUs=$CPUS Boards=$(hardware Boards) SocketsPerBoard=$(hardware SocketsPerBoard) CoresPerSocket=$(hardware CoresPerSocket) ThreadsPerCore=$(hardware ThreadsPerCore)"
else
  CPU_CONF="CPUs=$CPUS"
fi
fake_gpus "$FAKE_GPUS" "$NODELIST"
NODE_LINES=$(for n in "${NODE_NAMES[@]}"; do
  echo "NodeName=$n NodeAddr=$(addr "$n") $CPU_CONF RealMemory=$MEM $GRES_NODE State=UNKNOWN"
done)
NEWCONF=$(cat <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$CTL($CTL_ADDR)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd-%n
TmpFS=$STATE/tmp-%n
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
$(scheduling_conf)
SlurmdTimeout=10
$NODE_LINES
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
)
CHANGED=0
write_if_changed /etc/slurm/slurm.conf "$NEWCONF"
register_cluster "$CLUSTER"

# 7. daemons. The one-node cluster's slurmd holds the other configuration: stop it. Then the
#    controller, and one slurmd per node: `nsenter --net` puts it in the node's namespace,
#    `unshare --uts` gives it (and every job step it starts) the node's hostname.
stop_pidfile /run/slurmd.pid
if [ $CHANGED = 1 ]; then
  for f in /run/slurmd-n*.pid /run/slurmctld.pid; do
    alive "$f" && { log "config changed"; stop_pidfile "$f"; }
  done
fi
alive /run/slurmctld.pid || { log "starting slurmctld"; /usr/sbin/slurmctld; }
waitfor 30 scontrol ping
for n in "${NODE_NAMES[@]}"; do
  alive "/run/slurmd-$n.pid" && continue
  if [ -z "$(ip netns pids "$n")" ]; then  # nothing runs on the node: clean up as a reboot does
    rm -rf "$STATE/slurmd-$n"/stepd.slurm.pmix.* "$STATE/slurmd-$n"/pmix.* "${STATE:?}/tmp-$n"/*
  fi
  log "starting slurmd $n in netns $n"
  nsenter --net="/run/netns/$n" unshare --uts sh -c "hostname $n && exec /usr/sbin/slurmd -N $n"
done
nodes_in() { [ "$(sinfo -h -N -n "$NODELIST" -o %t | grep -cE "^($1)\$")" -eq "$NODES" ]; }
waitfor 30 nodes_in 'idle|mix|alloc|comp|down|drain|inval|fail|maint'  # registered ('*': not yet)
if sinfo -h -n "$NODELIST" -o %t | grep -Eq 'down|drain|inval|fail'; then
  scontrol update nodename="$NODELIST" state=resume 2>/dev/null || true
fi
waitfor 30 nodes_in 'idle|mix|alloc|comp'
# a smoke test when the nodes are free: one task per node, each in its own namespace
if [ -z "$(squeue -h 2>/dev/null)" ]; then
  timeout 60 srun -N "$NODES" -n "$NODES" -t 1 sh -c 'echo "$(hostname) $(ip -4 -o addr show dev eth0 | awk "{print \$4}")"' |
    sort | sed 's/^/  srun: /'
fi
log "cluster up: $(sinfo -h -o '%P %D %t %N %C' | head -1) (partition nodes state names cpus A/I/O/T)"
