#!/usr/bin/env bash
# CI: stop the one-node Slurm cluster that .ci/slurm-up.sh started (slurmd, slurmctld, munged).
# Cancels all jobs first; stops each daemon by its pid file, with pkill -x as a fallback.
# Never fails: always exits 0.
set -uo pipefail

log() { echo "slurm-down: $*"; }

# stop_daemon NAME PIDFILE: SIGTERM via the pid file (pkill -x NAME as the fallback), SIGKILL if stuck
stop_daemon() {
    local name="$1" pidfile="$2" pid="" sig
    pgrep -x "$name" >/dev/null 2>&1 || { rm -f "$pidfile"; return 0; }
    log "stopping $name"
    if [ -s "$pidfile" ]; then
        pid="$(cat "$pidfile" 2>/dev/null || true)"
        [ -n "$pid" ] && [ "$(ps -p "$pid" -o comm= 2>/dev/null)" = "$name" ] || pid=""
    fi
    for sig in TERM KILL; do
        if [ -n "$pid" ] && kill -s "$sig" "$pid" 2>/dev/null; then :; fi
        # fallback: whatever instance the pid file does not name
        if [ -z "$pid" ] || [ "$sig" = KILL ]; then
            pkill -"$sig" -x "$name" 2>/dev/null || true
        fi
        for _ in $(seq 1 20); do   # up to 10 s
            pgrep -x "$name" >/dev/null 2>&1 || break 2
            sleep 0.5
        done
        if [ "$sig" = TERM ]; then
            log "$name still runs after 10 s; SIGKILL"
        fi
    done
    rm -f "$pidfile"
}

if command -v scancel >/dev/null 2>&1 && pgrep -x slurmctld >/dev/null 2>&1; then
    log "cancelling all jobs"
    jobs="$(timeout 10 squeue -h -o %i 2>/dev/null || true)"
    # shellcheck disable=SC2086  # one argument per job id
    [ -n "$jobs" ] && { timeout 15 scancel --full --quiet $jobs 2>/dev/null || true; }
    for _ in $(seq 1 20); do
        [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
fi

stop_daemon slurmd /run/slurm/slurmd.pid
stop_daemon slurmctld /run/slurm/slurmctld.pid
stop_daemon munged /run/munge/munged.pid

# job steps left behind by a killed slurmd
pkill -KILL -x slurmstepd 2>/dev/null || true

log "done"
exit 0
