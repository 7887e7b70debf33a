#!/usr/bin/env bash
# Start a real single-node SLURM cluster on localhost, with real accounting, so that the
# submitit_slurm launcher path is tested against real slurmctld/slurmd/slurmdbd daemons instead of
# a mock: submitit polls `sacct` for job states, and here that is the real sacct reading slurmdbd.
# Idempotent: a second call finds the running daemons and only re-checks that the node is up.
#
# Needs root and, the first time, apt (Debian/Ubuntu): it installs slurmctld slurmd slurm-client
# munge slurmdbd mariadb-server. Everything else lives in one state dir ($ISOFLOP_SLURM_DIR,
# default /tmp/isoflop-slurm): config, munge key and socket, the accounting database, spool,
# logs, pid files, fake GPU device nodes.
#
# stdout: shell lines to eval, e.g.  eval "$(scripts/slurm/start.sh)"
#     export SLURM_CONF=/tmp/isoflop-slurm/etc/slurm.conf
# stderr: progress and errors.
#
# Exit codes: 0 cluster up; 3 the environment cannot host it (not root, no apt, apt unreachable):
# callers may skip; 1 anything else (a real failure: read the logs it prints).
#
# Knobs (env): ISOFLOP_SLURM_DIR, ISOFLOP_SLURMCTLD_PORT (16817), ISOFLOP_SLURMD_PORT (16818),
# ISOFLOP_SLURMDBD_PORT (16819), ISOFLOP_SLURM_DB_PORT (16306, MariaDB on 127.0.0.1),
# ISOFLOP_SLURM_GPUS (4 fake GPUs), ISOFLOP_SLURM_WAIT_S (60).
set -euo pipefail

DIR="${ISOFLOP_SLURM_DIR:-/tmp/isoflop-slurm}"
CTLD_PORT="${ISOFLOP_SLURMCTLD_PORT:-16817}"   # not the default 6817/6818: never clash with a real slurm
SLURMD_PORT="${ISOFLOP_SLURMD_PORT:-16818}"
DBD_PORT="${ISOFLOP_SLURMDBD_PORT:-16819}"
DB_PORT="${ISOFLOP_SLURM_DB_PORT:-16306}"
NGPUS="${ISOFLOP_SLURM_GPUS:-4}"
WAIT_S="${ISOFLOP_SLURM_WAIT_S:-60}"
NODE=isoflop-node            # slurmd is started with -N, so the machine's hostname does not matter
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF="$DIR/etc/slurm.conf"
T0=$(date +%s.%N)

log() { echo "[slurm] $*" >&2; }
cannot() { echo "[slurm] CANNOT START: $*" >&2; exit 3; }
die() { echo "[slurm] ERROR: $*" >&2; exit 1; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
emit() {
    echo "export SLURM_CONF=$CONF"
}

[ "$(id -u)" = 0 ] || cannot "needs root (daemons, munge user, mknod); run it under sudo"

mkdir -p "$DIR"
# One start at a time: several test processes may call this together.
exec 9>"$DIR/.lock"
flock -w 300 9 || die "timed out waiting for $DIR/.lock"

export SLURM_CONF="$CONF"
alive() {  # alive PIDFILE NAME
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q "$2" "/proc/$pid/comm" 2>/dev/null
}
node_state() { sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -n1 | tr -d ' *~#!%$@^-'; }

# ---- fast path: already running -------------------------------------------------------------
if alive "$DIR/run/munged.pid" munged && alive "$DIR/db/mariadb.pid" mariadbd \
        && alive "$DIR/run/slurmdbd.pid" slurmdbd && alive "$DIR/run/slurmctld.pid" slurmctld \
        && alive "$DIR/run/slurmd.pid" slurmd; then
    case "$(node_state)" in
        idle|mix|alloc|comp)
            log "already running (node $(node_state)), $(elapsed) s"
            emit; exit 0 ;;
    esac
    log "daemons alive but node not ready: restarting them"
    "$HERE/stop.sh" >&2 || true
fi

# ---- install --------------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge slurmdbd:slurmdbd \
        mariadbd:mariadb-server; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || cannot "no apt-get to install: ${missing[*]}"
    log "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    # keep package postinst scripts from starting system-wide daemons we do not use
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    ok=1
    apt-get update -qq >"$DIR/apt.log" 2>&1 || ok=0
    if [ $ok = 1 ]; then
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1 || ok=0
    fi
    [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ $ok = 0 ]; then
        tail -n 20 "$DIR/apt.log" >&2
        cannot "apt-get could not install ${missing[*]} (registry unreachable?), see $DIR/apt.log"
    fi
    log "installed in $(elapsed) s"
fi
id munge >/dev/null 2>&1 || die "the munge package did not create user munge"
id mysql >/dev/null 2>&1 || die "the mariadb-server package did not create user mysql"

# ---- state dir ------------------------------------------------------------------------------
mkdir -p "$DIR"/{etc,state,spool,log,run,dev}
# MariaDB runs as user mysql: its data, socket, pid file and log live in a directory of its own
install -d -m 0755 -o mysql -g mysql "$DIR/db"
# the socket dir must be world-searchable (munged checks); the key itself is 0400 munge
install -d -m 0755 -o munge -g munge "$DIR/munge"
chown munge:munge "$DIR/run" "$DIR/log" 2>/dev/null || true
chmod 0755 "$DIR" "$DIR/run" "$DIR/log"
if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
fi
chown munge:munge "$DIR/munge/munge.key"; chmod 0400 "$DIR/munge/munge.key"

# Fake GPUs: slurm only accepts character devices in gres.conf File=, so make /dev/null clones.
gpu_files=()
for ((i = 0; i < NGPUS; i++)); do
    f="$DIR/dev/nvidia$i"
    if [ ! -c "$f" ]; then
        rm -f "$f"; mknod "$f" c 1 3 || die "mknod $f failed"
    fi
    gpu_files+=("$f")
done

# Real topology and memory of this machine, as slurmd itself sees it (avoids a drained node).
hw=$(slurmd -C 2>/dev/null | head -n1 | tr ' ' '\n' \
     | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')
[ -n "$hw" ] || hw="CPUs=$(nproc) RealMemory=$(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo)"
CTLD_HOST=$(hostname -s 2>/dev/null || hostname)

cat > "$CONF" <<EOF
# Written by scripts/slurm/start.sh: a single-node test cluster on 127.0.0.1. Do not edit.
ClusterName=isoflop
SlurmctldHost=$CTLD_HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: works in containers and VMs without a delegated cgroup tree
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# real accounting: slurmdbd on this machine, over the cluster's own munge socket
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$DIR/munge/munge.socket
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
# the node config is taken as given, and a node that was down comes back by itself
SlurmdParameters=config_overrides
ReturnToService=2
# preemption and requeue, as on shared clusters (submitit requeues itself on USR2)
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# quick turnaround for tests
KillWait=5
InactiveLimit=0
MinJobAge=600
# run the scheduling loops every few seconds (defaults 60 s / 30 s) so that a requeued job,
# once its BeginTime has passed, starts within seconds
SchedulerParameters=sched_interval=2,bf_interval=2
MessageTimeout=10
SlurmdTimeout=300
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $hw Gres=gpu:$NGPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=2
EOF

# slurmdbd stores job records in MariaDB on 127.0.0.1 (its own datadir and port, never the system's).
# The database password only guards a loopback port of a throwaway test cluster.
cat > "$DIR/etc/slurmdbd.conf" <<EOF
# Written by scripts/slurm/start.sh. Do not edit.
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=isoflop
StorageLoc=slurm_acct_db
EOF
chmod 0600 "$DIR/etc/slurmdbd.conf"

{
    echo "AutoDetect=off"
    echo "NodeName=$NODE Name=gpu File=$(IFS=,; echo "${gpu_files[*]}")"
} > "$DIR/etc/gres.conf"

# ---- daemons --------------------------------------------------------------------------------
if ! alive "$DIR/run/munged.pid" munged; then
    rm -f "$DIR/munge/munge.socket" "$DIR/munge/munge.socket.lock"
    runuser -u munge -- munged 9>&- --socket="$DIR/munge/munge.socket" \
        --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || { cat "$DIR/log/munged.log" >&2 2>/dev/null; die "munged did not start"; }
fi
if ! alive "$DIR/db/mariadb.pid" mariadbd; then
    if [ ! -d "$DIR/db/data/mysql" ]; then
        mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/db/data" --skip-test-db \
            --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 \
            || { tail -n 20 "$DIR/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    rm -f "$DIR/db/mysql.sock"
    runuser -u mysql -- mariadbd 9>&- --no-defaults --datadir="$DIR/db/data" --socket="$DIR/db/mysql.sock" \
        --pid-file="$DIR/db/mariadb.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --log-error="$DIR/db/mariadb.log" --skip-name-resolve --innodb-buffer-pool-size=32M \
        --performance-schema=off </dev/null >/dev/null 2>&1 &
    for ((i = 0; i < 300; i++)); do
        [ -S "$DIR/db/mysql.sock" ] && mariadb --no-defaults --socket="$DIR/db/mysql.sock" -uroot \
            -e 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.2
    done
    [ -S "$DIR/db/mysql.sock" ] || { tail -n 20 "$DIR/db/mariadb.log" >&2; die "mariadbd did not start"; }
    mariadb --no-defaults --socket="$DIR/db/mysql.sock" -uroot -e "
        CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'isoflop';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "could not create the accounting database"
fi
if ! alive "$DIR/run/slurmdbd.pid" slurmdbd; then
    # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF
    slurmdbd 9>&- || { tail -n 30 "$DIR/log/slurmdbd.log" >&2; die "slurmdbd did not start"; }
    for ((i = 0; i < 150; i++)); do  # slurmdbd creates its tables on first start
        sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1 && break
        sleep 0.2
    done
fi
# the cluster must exist in the accounting database before slurmctld registers with it
if ! sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx isoflop; then
    sacctmgr -i add cluster isoflop >/dev/null || { tail -n 30 "$DIR/log/slurmdbd.log" >&2; die "sacctmgr add cluster failed"; }
fi
if ! alive "$DIR/run/slurmctld.pid" slurmctld; then
    slurmctld -f "$CONF" 9>&- || { tail -n 30 "$DIR/log/slurmctld.log" >&2; die "slurmctld did not start"; }
fi
SLURMD_T0=$(( $(date +%s) - 1 ))
if ! alive "$DIR/run/slurmd.pid" slurmd; then
    slurmd -f "$CONF" -N "$NODE" 9>&- || { tail -n 30 "$DIR/log/slurmd.log" >&2; die "slurmd did not start"; }
fi

# ---- wait for the node ----------------------------------------------------------------------
# slurmctld recovers the node as idle from its state file before slurmd has registered, so "idle"
# alone is not enough after a restart: also wait for this slurmd's registration time.
registered() {
    local t
    t=$(scontrol -o show node "$NODE" 2>/dev/null | tr ' ' '\n' | sed -n 's/^SlurmdStartTime=//p')
    [ -n "$t" ] && [ "$t" != None ] && [ "$(date -d "$t" +%s 2>/dev/null || echo 0)" -ge "$SLURMD_T0" ]
}
deadline=$(( $(date +%s) + WAIT_S ))
resumed=0
while :; do
    st=$(node_state || true)
    case "$st" in
        idle|mix|alloc) registered && break ;;
        down|drain|drng|fail)
            if [ $resumed = 0 ]; then  # leftover state from an earlier run
                scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi ;;
    esac
    if [ "$(date +%s)" -ge $deadline ]; then
        sinfo -R >&2 || true
        for f in munged slurmctld slurmd; do
            echo "--- $DIR/log/$f.log" >&2; tail -n 20 "$DIR/log/$f.log" >&2 2>/dev/null || true
        done
        die "node $NODE not idle after ${WAIT_S} s (state: '${st:-none}')"
    fi
    sleep 0.2
done
log "up: node $NODE idle ($hw Gres=gpu:$NGPUS), ports $CTLD_PORT/$SLURMD_PORT, $(elapsed) s"
emit
