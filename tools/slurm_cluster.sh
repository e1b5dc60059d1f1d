#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the test of `--launcher slurm` on a real
# Slurm (tests/test_slurm_cluster.py). CI only: it installs Debian's packages and starts
# system daemons, which `make test` on a user's machine never does (there the test runs only
# where a Slurm already answers `sinfo`).
#
#   tools/slurm_cluster.sh start   # install if missing, configure, start, wait until the node is idle
#   tools/slurm_cluster.sh stop    # stop the daemons this script started
#
# Slurm 22.05 (Debian 12): slurmctld + slurmd on one node named after `hostname` at 127.0.0.1,
# proctrack/linuxproc and task/none (no cgroups in a container), every daemon as root;
# slurmdbd on MariaDB so that `sacct` answers (submitit reads a task's end state from it:
# without it, waiting on a cancelled task never ends).
set -euo pipefail

STATE=/var/lib/clbench-slurm
CONF=/etc/slurm
NODE=$(hostname)
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

log() { echo "slurm_cluster: $*"; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || { log "not root: cannot install ${PACKAGES[*]}"; exit 3; }
  command -v apt-get >/dev/null || { log "no apt-get: cannot install ${PACKAGES[*]}"; exit 3; }
  log "installing ${PACKAGES[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}" >"$STATE/apt.log" 2>&1 \
    || { apt-get update -q >>"$STATE/apt.log" 2>&1 \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}" >>"$STATE/apt.log" 2>&1; } \
    || { log "apt-get install failed (see $STATE/apt.log)"; exit 3; }
}

write_configs() {
  local cpus memory
  cpus=$(nproc)
  memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
  mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat >"$CONF/slurm.conf" <<EOF
ClusterName=clbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=clbench
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=$STATE/slurmdbd.pid
EOF
  chmod 600 "$CONF/slurmdbd.conf"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "$what did not come up in ${seconds}s"
  return 1
}

start() {
  mkdir -p "$STATE"
  install_packages
  write_configs
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
  pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! pgrep -x mariadbd >/dev/null; then
    (mysqld_safe >"$STATE/mariadb.log" 2>&1 &)
  fi
  wait_for 60 MariaDB mysqladmin ping
  mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'clbench';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  pgrep -x slurmdbd >/dev/null || slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -i -Q add cluster clbench >/dev/null 2>&1 || true
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
  wait_for 90 "the node $NODE" sh -c "sinfo -h -N -o %t | grep -q -x idle"
  wait_for 30 sacct sacct -n -X
  log "up: $(sinfo -h -o '%P %D %t %c CPUs')"
}

stop() {
  for daemon in slurmd slurmctld slurmdbd; do pkill -x "$daemon" || true; done
  mysqladmin shutdown >/dev/null 2>&1 || true
  pkill -x munged || true
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
