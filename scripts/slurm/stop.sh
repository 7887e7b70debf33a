#!/usr/bin/env bash
# Stop the localhost SLURM cluster that scripts/slurm/start.sh started: cancel its jobs, then
# stop slurmd, slurmctld, slurmdbd, MariaDB and munged by their pid files (nothing is killed by name).
# --purge also removes the state dir ($ISOFLOP_SLURM_DIR, default /tmp/isoflop-slurm).
set -uo pipefail

DIR="${ISOFLOP_SLURM_DIR:-/tmp/isoflop-slurm}"
export SLURM_CONF="$DIR/etc/slurm.conf"
export PATH="$PATH:/usr/sbin:/sbin"
log() { echo "[slurm] $*" >&2; }

alive() {  # alive PIDFILE NAME -> prints the pid when that process is running
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q "$2" "/proc/$pid/comm" 2>/dev/null \
        && echo "$pid"
}

stop_one() {  # stop_one PIDFILE NAME
    local pid i
    pid=$(alive "$1" "$2") || { rm -f "$1"; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$2 ($pid) ignored SIGTERM for 10 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$1"
    log "stopped $2 ($pid)"
}

[ -d "$DIR" ] || { log "nothing at $DIR"; exit 0; }

# Cancel this cluster's jobs first so that no job scripts outlive the daemons.
if alive "$DIR/run/slurmctld.pid" slurmctld >/dev/null && command -v squeue >/dev/null; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null && log "cancelled jobs: $jobs"
        for ((i = 0; i < 50; i++)); do
            [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
fi

stop_one "$DIR/run/slurmd.pid" slurmd
stop_one "$DIR/run/slurmctld.pid" slurmctld
stop_one "$DIR/run/slurmdbd.pid" slurmdbd
stop_one "$DIR/db/mariadb.pid" mariadbd
stop_one "$DIR/run/munged.pid" munged

if [ "${1:-}" = "--purge" ]; then
    rm -rf "$DIR" && log "removed $DIR"
fi
exit 0
