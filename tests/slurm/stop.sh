#!/usr/bin/env bash
# Stop the test cluster of tests/slurm/start.sh: cancels its jobs, then ends exactly the daemons
# start.sh started (slurmd, slurmctld, munged), by the PIDs it recorded in
# $BILLETJAX_SLURM_DIR/pids/. Daemons it did not start (e.g. a munged that was already running)
# are left alone. With --purge it also removes $BILLETJAX_SLURM_DIR (configuration, state, logs).
set -uo pipefail

DIR=${BILLETJAX_SLURM_DIR:-/tmp/billetjax-slurm}
PIDS="$DIR/pids"
say() { echo "[slurm stop] $*" >&2; }

if [ -s "$PIDS/slurmctld.pid" ] && kill -0 "$(cat "$PIDS/slurmctld.pid")" 2>/dev/null; then
    # jobs left over from an interrupted test would otherwise keep running as orphans
    SLURM_CONF="$DIR/etc/slurm.conf" scancel --quiet --partition="$(
        sed -n 's/^PartitionName=\([^ ]*\).*/\1/p' "$DIR/etc/slurm.conf")" 2>/dev/null || true
    # give the job steps time to end (KillWait=10 s) before slurmd goes
    for _ in $(seq 60); do
        [ -z "$(SLURM_CONF="$DIR/etc/slurm.conf" squeue -h -t R,CG 2>/dev/null)" ] && break
        sleep 0.25
    done
fi

stop_pid() {  # stop_pid NAME: SIGTERM the recorded PID, wait, SIGKILL if it lingers
    local name=$1 f="$PIDS/$1.pid" pid
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    # only signal the PID if it still belongs to the daemon we started (PIDs get reused)
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "$name (pid $pid) stopped"
    fi
    rm -f "$f"
}

# slurmd first (it ends its job steps), then the controller, then authentication
stop_pid slurmd
stop_pid slurmctld
stop_pid munged

if [ "${1:-}" = "--purge" ]; then
    rm -rf "$DIR"
    say "removed $DIR"
fi
exit 0
