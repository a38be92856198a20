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
NODE=$(hostname -s)
LOG_TAG=test-cluster
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ "$(id -u)" = 0 ] || { echo "start-test-cluster.sh: run as root" >&2; exit 1; }

# 1. packages
PKGS=(slurmctld slurmd slurm-client munge slurm-wlm-torque openmpi-bin libpmix2)
[ "$ACCT" = slurmdbd ] && PKGS+=(slurmdbd mariadb-server)
install_missing "${PKGS[@]}"

# 2. slurmd matches its NodeName against `hostname -s`: it must resolve
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts

# 3. munge (authentication between the daemons)
start_munge
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
    stop_pidfile "$f"
  fi
done

# 4. accounting: MariaDB + slurmdbd on loopback, so that sacct (and submitit's watcher) know job
#    states (the two-node cluster's slurmdbd listens beyond loopback: it is restarted)
[ "$ACCT" = slurmdbd ] && start_slurmdbd 127.0.0.1 CommunicationParameters=NoInAddrAny
ACCT_CONF=$(accounting_conf localhost)

# 5. slurm.conf from the real hardware; fake GPUs are character devices slurmd can open
MEM=$(( $(hardware RealMemory) * 9 / 10 ))
fake_gpus "$FAKE_GPUS" "$NODE"
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
$(scheduling_conf)
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(hardware CPUs) Boards=$(hardware Boards) SocketsPerBoard=$(hardware SocketsPerBoard) CoresPerSocket=$(hardware CoresPerSocket) ThreadsPerCore=$(hardware ThreadsPerCore) RealMemory=$MEM $GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
)
CHANGED=0
write_if_changed /etc/slurm/slurm.conf "$NEWCONF"
register_cluster "$CLUSTER"

# 6. controller and node daemon (restarted when the configuration changed)
if [ $CHANGED = 1 ]; then
  for f in /run/slurmd.pid /run/slurmctld.pid; do
    alive $f && { log "config changed"; stop_pidfile $f; }
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
