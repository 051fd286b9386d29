#!/usr/bin/env bash
# CI step after the unit tests (.ci/run calls it): start the one-node SLURM cluster, run the SLURM
# integration tests (`pytest -m slurm`, extra arguments passed on), stop the cluster again,
# whatever the outcome.
#
# Needs root and apt (Debian): start.sh installs slurm-wlm and munge when missing. Elsewhere it
# says why and exits 0, as the tests themselves skip there. Inside, BILLETJAX_SLURM_REQUIRED=1
# makes a cluster that does not come up a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}

if [ "$(id -u)" != 0 ]; then
    echo "[slurm ci] skipped: needs root to install and start SLURM (tests/slurm/start.sh)"
    exit 0
fi
if ! command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null; then
    echo "[slurm ci] skipped: SLURM is not installed and there is no apt-get to install it"
    exit 0
fi

export BILLETJAX_SLURM_DIR=${BILLETJAX_SLURM_DIR:-/tmp/billetjax-slurm}
if [ -s "$BILLETJAX_SLURM_DIR/pids/slurmctld.pid" ] \
        && kill -0 "$(cat "$BILLETJAX_SLURM_DIR/pids/slurmctld.pid")" 2>/dev/null; then
    echo "[slurm ci] the test cluster was already up: leaving it running afterwards"
else
    trap 'bash "$ROOT/tests/slurm/stop.sh" --purge' EXIT
fi

t0=$(date +%s)
bash tests/slurm/start.sh
t1=$(date +%s)
echo "[slurm ci] cluster set up in $((t1 - t0)) s (package installation included)"

export BILLETJAX_SLURM_REQUIRED=1
export PATH="$(dirname "$PY"):$PATH"
status=0
"$PY" -m pytest -m slurm -v -rA -p no:cacheprovider --durations=0 tests/test_slurm.py "$@" || status=$?
t2=$(date +%s)
echo "[slurm ci] SLURM tests took $((t2 - t1)) s (exit status $status)"
exit $status
