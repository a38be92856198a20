#!/usr/bin/env bash
# Bring up a real one-node SLURM cluster on this Debian 12 machine (no systemd needed): munge,
# MariaDB + slurmdbd (so `sacct` works), slurmctld, slurmd, fake GPUs as gres, PMIx for
# `srun --mpi=pmix`, and the Torque-style qsub wrappers (slurm-wlm-torque) for PBS tests.
# Idempotent: re-running starts only what is down. Run as root. Used by the tests and CI.
#
#   bash slurm/start-test-cluster.sh            # ~20 s from scratch, a few s when up
#   bash slurm/stop-test-cluster.sh [--purge]
#
# Knobs: SLURM_FAKE_GPUS=N (default 2), SLURM_ACCOUNTING=slurmdbd|none (default slurmdbd).
set -euo pipefail

FAKE_GPUS=${SLURM_FAKE_GPUS:-2}
ACCT=${SLURM_ACCOUNTING:-slurmdbd}
CLUSTER=hpcdltest
DBPASS=hpcdl-test-only
NODE=$(hostname -s)
log() { echo "[test-cluster $(date +%T)] $*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
waitfor() { # waitfor SECONDS CMD...
  local t=$1; shift
  for _ in $(seq 1 $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timeout waiting for: $*" >&2; return 1
}
[ "$(id -u)" = 0 ] || { echo "start-test-cluster.sh: run as root" >&2; exit 1; }

# 1. packages
PKGS=(slurmctld slurmd slurm-client munge slurm-wlm-torque openmpi-bin libpmix2)
[ "$ACCT" = slurmdbd ] && PKGS+=(slurmdbd mariadb-server)
MISSING=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || MISSING+=("$p")
done
if [ ${#MISSING[@]} -gt 0 ]; then
  log "installing ${MISSING[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends install "${MISSING[@]}" >/dev/null
fi

# 2. slurmd matches its NodeName against `hostname -s`: it must resolve
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts

# 3. munge (authentication between the daemons)
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge; chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"; runuser -u munge -- /usr/sbin/munged
  waitfor 10 sh -c 'munge -n | unmunge'
fi
install -d -o slurm -g slurm -m 0755 /var/lib/slurm/slurmctld /var/log/slurm
install -d -o root -g root -m 0755 /var/lib/slurm/slurmd /etc/slurm

# 3b. the two-node cluster (start-two-node-cluster.sh) writes the same slurm.conf: its jobs are
#     cancelled and its node daemons stopped (its state and namespaces stay for its next start)
for f in /run/slurmd-n*.pid; do
  if alive "$f"; then
    ids=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${ids// }" ]; then
      log "cancelling the two-node cluster's jobs: $ids"; scancel $ids || true
      waitfor 30 sh -c '[ -z "$(squeue -h -t R,CG)" ]' || true
    fi
    log "stopping the two-node cluster's $(basename "$f" .pid)"; p=$(cat "$f"); kill "$p"
    waitfor 30 sh -c "! kill -0 $p"
  fi
done

# 4. accounting: MariaDB + slurmdbd, so that sacct (and submitit's watcher) know job states
if [ "$ACCT" = slurmdbd ]; then
  if ! mysqladmin ping >/dev/null 2>&1; then
    log "starting mariadb"
    service mariadb start >/dev/null 2>&1 || {
      install -d -o mysql -g mysql /run/mysqld
      (setsid mysqld_safe --bind-address=127.0.0.1 >/dev/null 2>&1 &) ; }
    waitfor 60 mysqladmin ping
  fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  NEWDBD=$(cat <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
CommunicationParameters=NoInAddrAny
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
CONF
)
  if [ "$NEWDBD" != "$(cat /etc/slurm/slurmdbd.conf 2>/dev/null)" ]; then
    echo "$NEWDBD" > /etc/slurm/slurmdbd.conf
    if alive /run/slurmdbd.pid; then  # e.g. the two-node cluster's (listening beyond loopback)
      log "slurmdbd.conf changed: restarting slurmdbd"; p=$(cat /run/slurmdbd.pid); kill "$p"
      waitfor 30 sh -c "! kill -0 $p"
    fi
  fi
  chown slurm:slurm /etc/slurm/slurmdbd.conf; chmod 0600 /etc/slurm/slurmdbd.conf
  alive /run/slurmdbd.pid || { log "starting slurmdbd"; /usr/sbin/slurmdbd; }
  # gres/gpu in the accounted TRES, so sacct's AllocTRES shows GPUs (and GPU-hours can be costed)
  ACCT_CONF=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nAccountingStoragePort=6819\nAccountingStorageTRES=gres/gpu'
else
  ACCT_CONF="AccountingStorageType=accounting_storage/none"
fi

# 5. slurm.conf from the real hardware; fake GPUs are character devices slurmd can open
HW=$(slurmd -C | head -1)
val() { echo "$HW" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
MEM=$(( $(val RealMemory) * 9 / 10 ))
GRES_NODE=""; GRES_TYPES=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    [ -c /var/lib/slurm/fakegpu$i ] || { rm -f /var/lib/slurm/fakegpu$i; mknod -m 666 /var/lib/slurm/fakegpu$i c 1 3; }
  done
  echo "NodeName=$NODE Name=gpu File=/var/lib/slurm/fakegpu[0-$((FAKE_GPUS - 1))]" > /etc/slurm/gres.conf
  GRES_NODE="Gres=gpu:$FAKE_GPUS"; GRES_TYPES="GresTypes=gpu"
else
  rm -f /etc/slurm/gres.conf
fi
# Notes: DefMemPerCPU, or each job takes all memory and jobs run one at a time; loopback-only
# addresses (the sandbox has no other network); kill_invalid_depend so an afterok on a failed
# job does not pend forever; a small MaxArraySize so tests can exercise array splitting.
NEWCONF=$(cat <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
MaxArraySize=${SLURM_MAX_ARRAY_SIZE:-1001}
DependencyParameters=kill_invalid_depend
$GRES_TYPES
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
$ACCT_CONF
JobRequeue=1
MinJobAge=300
KillWait=5
OverTimeLimit=0
InactiveLimit=0
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(val CPUs) Boards=$(val Boards) SocketsPerBoard=$(val SocketsPerBoard) CoresPerSocket=$(val CoresPerSocket) ThreadsPerCore=$(val ThreadsPerCore) RealMemory=$MEM $GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
)
CHANGED=0
if [ "$NEWCONF" != "$(cat /etc/slurm/slurm.conf 2>/dev/null)" ]; then
  echo "$NEWCONF" > /etc/slurm/slurm.conf; CHANGED=1
fi
if [ "$ACCT" = slurmdbd ]; then
  waitfor 60 sacctmgr -n list cluster
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# 6. controller and node daemon (restarted when the configuration changed)
if [ $CHANGED = 1 ]; then
  for f in /run/slurmd.pid /run/slurmctld.pid; do
    if alive $f; then
      log "config changed: restarting $(basename $f .pid)"; p=$(cat $f); kill "$p"
      waitfor 30 sh -c "! kill -0 $p"
    fi
  done
fi
alive /run/slurmctld.pid || { log "starting slurmctld"; /usr/sbin/slurmctld; }
waitfor 30 scontrol ping
alive /run/slurmd.pid || { log "starting slurmd"; /usr/sbin/slurmd; }
waitfor 30 sh -c "sinfo -h -n $NODE -o %t | grep -Eq '^(idle|mix|alloc|down|drain|inval)'"
if sinfo -h -n "$NODE" -o %t | grep -Eq 'down|drain|inval'; then
  scontrol update nodename="$NODE" state=resume || true
fi
waitfor 30 sh -c "sinfo -h -n $NODE -o %t | grep -Eq '^(idle|mix|alloc)'"
timeout 60 srun -N1 -n1 -t 1 true
log "cluster up: $(sinfo -h -o '%P %D %t %C' | head -1) (partition nodes state cpus A/I/O/T)"
