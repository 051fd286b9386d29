#!/usr/bin/env bash
# Start a single-node SLURM cluster on localhost for the integration tests (tests/test_slurm.py).
#
# Debian (12) as root: installs slurm-wlm and munge from apt when missing, writes slurm.conf and
# gres.conf under $BILLETJAX_SLURM_DIR (default /tmp/billetjax-slurm), and starts munged,
# slurmctld and slurmd by hand (there is no systemd). The node offers every CPU of the machine,
# 80 % of its memory and one GPU-like GRES (gpu:1 backed by /dev/null), so `--gpus=1` jobs are
# scheduled one at a time and get CUDA_VISIBLE_DEVICES from SLURM like on a real GPU node.
#
# Facts this relies on (SLURM 22.05, snakemake-executor-plugin-slurm 2.8.0):
#   - no cgroup.conf; proctrack/linuxproc and task/none work without cgroup mounts;
#   - slurmd runs configless (--conf-server): the plugin's job step removes SLURM_CONF from the
#     environment of its inner `srun`, which then reads the config slurmd caches in /run/slurm/conf;
#   - no slurmdbd, so `sacct` fails: the profile must use `slurm-status-command: squeue`, and
#     MinJobAge is long so that finished jobs stay visible to squeue;
#   - DefMemPerCPU is set so that job steps without a memory request fit their allocation.
#
# Every daemon this script starts has its PID recorded in $BILLETJAX_SLURM_DIR/pids/; stop.sh ends
# exactly those. Running start.sh again while the cluster is up does nothing.
# Prints `export SLURM_CONF=...` as its last line; the client commands also work without it.
set -euo pipefail

DIR=${BILLETJAX_SLURM_DIR:-/tmp/billetjax-slurm}
PARTITION=${BILLETJAX_SLURM_PARTITION:-billetjax}
NODE=$(hostname -s)
PIDS="$DIR/pids"
t0=$(date +%s.%N)

say() { echo "[slurm start] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"

alive() {  # alive NAME: the recorded daemon NAME is running
    local f="$PIDS/$1.pid"
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

if alive slurmctld && alive slurmd; then
    say "already running (state in $DIR)"
    echo "export SLURM_CONF=$DIR/etc/slurm.conf"
    exit 0
fi

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    command -v apt-get >/dev/null || die "slurm is not installed and there is no apt-get"
    say "installing slurm-wlm and munge from apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
fi

mkdir -p "$DIR"/{etc,pids,log,spool/ctld,spool/d}
chmod 755 "$DIR"

# ---------------------------------------------------------------- munge
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key

if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running (not started here, so stop.sh leaves it alone)"
else
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    install -d -o munge -g munge -m 0755 "$DIR/munge"
    rm -f "$DIR/munge/munged.pid"
    runuser -u munge -- munged --pid-file="$DIR/munge/munged.pid"
    for _ in $(seq 50); do [ -s "$DIR/munge/munged.pid" ] && break; sleep 0.1; done
    [ -s "$DIR/munge/munged.pid" ] || die "munged did not start; see /var/log/munge/munged.log"
    cp "$DIR/munge/munged.pid" "$PIDS/munged.pid"
    munge -n | unmunge >/dev/null || die "munged does not answer"
    say "munged up (pid $(cat "$PIDS/munged.pid"))"
fi

# ---------------------------------------------------------------- configuration
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
DEF_MEM=$(( MEM_MB / CPUS < 2000 ? MEM_MB / CPUS : 2000 ))

cat > "$DIR/etc/slurm.conf" <<EOF
# written by tests/slurm/start.sh: a one-node test cluster, not a production configuration
ClusterName=billetjax
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldParameters=enable_configless
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# finished jobs stay visible to squeue for an hour (there is no sacct without slurmdbd)
MinJobAge=3600
DefMemPerCPU=$DEF_MEM
GresTypes=gpu
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/log/slurmctld.pid
SlurmdPidFile=$DIR/log/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

cat > "$DIR/etc/gres.conf" <<EOF
# one GPU-like generic resource; SLURM sets CUDA_VISIBLE_DEVICES for the jobs that get it
Name=gpu File=/dev/null
EOF
export SLURM_CONF="$DIR/etc/slurm.conf"

# ---------------------------------------------------------------- daemons
start_daemon() {  # start_daemon NAME PIDFILE COMMAND...: start a forking daemon, record its PID
    local name=$1 pidfile=$2; shift 2
    rm -f "$pidfile"
    "$@"
    for _ in $(seq 100); do [ -s "$pidfile" ] && break; sleep 0.1; done
    [ -s "$pidfile" ] || die "$name did not start; see $DIR/log/$name.log"
    cp "$pidfile" "$PIDS/$name.pid"
    say "$name up (pid $(cat "$PIDS/$name.pid"))"
}

mkdir -p /run/slurm
alive slurmctld || start_daemon slurmctld "$DIR/log/slurmctld.pid" \
    slurmctld -f "$DIR/etc/slurm.conf"
# configless: slurmd fetches slurm.conf and gres.conf from slurmctld and caches them in
# $DIR/spool/d/conf-cache, linked from /run/slurm/conf where client commands find them
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
alive slurmd || start_daemon slurmd "$DIR/log/slurmd.pid" \
    slurmd --conf-server 127.0.0.1 -N "$NODE"

# ---------------------------------------------------------------- wait for the node
state=""
for _ in $(seq 150); do
    state=$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -1 || true)
    case "$state" in
        idle|mix|alloc) break ;;
        down*|drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
done
case "$state" in idle|mix|alloc) ;; *) die "node $NODE is '$state'; see $DIR/log/" ;; esac

t1=$(date +%s.%N)
say "cluster up: partition $PARTITION, node $NODE ($CPUS CPUs, $MEM_MB MB, gpu:1) in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s"
echo "export SLURM_CONF=$DIR/etc/slurm.conf"
