# Steps shared by slurm/start-test-cluster.sh and slurm/start-two-node-cluster.sh; sourced, not
# run. The caller sets LOG_TAG (its log lines' prefix) and ACCT (slurmdbd|none) first.

DBPASS=hpcdl-test-only  # the accounting database's user and password, the same for both clusters

log() { echo "[$LOG_TAG $(date +%T)] $*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
waitfor() { # waitfor SECONDS CMD...
  local t=$1; shift
  for _ in $(seq 1 $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timeout waiting for: $*" >&2; return 1
}
stop_pidfile() { # stop_pidfile PIDFILE: TERM, wait up to 30 s
  alive "$1" || return 0
  local p; p=$(cat "$1"); log "stopping $(basename "$1" .pid) (pid $p)"; kill "$p"
  waitfor 30 sh -c "! kill -0 $p"
}

install_missing() { # install_missing PKG...: apt-get installs those dpkg does not have
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends install "${missing[@]}" >/dev/null
}

start_munge() { # a key, and munged (authentication between the daemons) unless it answers
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
}

start_slurmdbd() { # start_slurmdbd ADDR [LINE]: MariaDB, its slurm user, slurmdbd on ADDR
  # A slurmdbd running with another configuration (the other cluster's) is restarted.
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
  local conf
  conf=$(cat <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=$1
DbdPort=6819
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
${2:-}
CONF
)
  if [ "$conf" != "$(cat /etc/slurm/slurmdbd.conf 2>/dev/null)" ]; then
    echo "$conf" > /etc/slurm/slurmdbd.conf
    stop_pidfile /run/slurmdbd.pid
  fi
  chown slurm:slurm /etc/slurm/slurmdbd.conf; chmod 0600 /etc/slurm/slurmdbd.conf
  alive /run/slurmdbd.pid || { log "starting slurmdbd"; /usr/sbin/slurmdbd; }
}

accounting_conf() { # accounting_conf HOST: slurm.conf's accounting lines for $ACCT
  if [ "$ACCT" = slurmdbd ]; then
    # gres/gpu in the accounted TRES, so sacct's AllocTRES shows GPUs (GPU-hours can be costed)
    printf '%s\n' "AccountingStorageType=accounting_storage/slurmdbd" "AccountingStorageHost=$1" \
      "AccountingStoragePort=6819" "AccountingStorageTRES=gres/gpu"
  else
    echo "AccountingStorageType=accounting_storage/none"
  fi
}

fake_gpus() { # fake_gpus N NODES: N gres/gpu per node, character devices slurmd can open
  # Sets GRES_NODE (for the NodeName lines) and GRES_TYPES (for slurm.conf); writes gres.conf.
  GRES_NODE=""; GRES_TYPES=""
  if [ "$1" -gt 0 ]; then
    local i
    for i in $(seq 0 $(($1 - 1))); do
      [ -c /var/lib/slurm/fakegpu$i ] || { rm -f /var/lib/slurm/fakegpu$i; mknod -m 666 /var/lib/slurm/fakegpu$i c 1 3; }
    done
    echo "NodeName=$2 Name=gpu File=/var/lib/slurm/fakegpu[0-$(($1 - 1))]" > /etc/slurm/gres.conf
    GRES_NODE="Gres=gpu:$1"; GRES_TYPES="GresTypes=gpu"
  else
    rm -f /etc/slurm/gres.conf
  fi
}

register_cluster() { # register_cluster NAME: the cluster known to slurmdbd (with accounting)
  [ "$ACCT" = slurmdbd ] || return 0
  waitfor 60 sacctmgr -n list cluster
  sacctmgr -n -P list cluster format=cluster | grep -qx "$1" || sacctmgr -i add cluster "$1" >/dev/null
}

scheduling_conf() { # slurm.conf's scheduling, accounting and requeue lines, the same on both
  # clusters (needs GRES_TYPES from fake_gpus and ACCT_CONF from accounting_conf)
  cat <<CONF
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
CONF
}

write_if_changed() { # write_if_changed FILE TEXT: sets CHANGED=1 when FILE did not hold TEXT
  if [ "$2" != "$(cat "$1" 2>/dev/null)" ]; then
    echo "$2" > "$1"; CHANGED=1
  fi
}

hardware() { # hardware KEY: a value of `slurmd -C`'s node line (CPUs, RealMemory, Boards ...)
  slurmd -C | head -1 | tr ' ' '\n' | sed -n "s/^$1=//p"
}
