#!/usr/bin/env bash
# make gpu-check: the GPU path, proven on a machine with an NVIDIA GPU (about 10 min on an H100).
#
#   1. installs billetjax with jax[cuda12] (and the test extra: PyTorch, the benchmarks' peer)
#      into the virtual environment, unless JAX there already sees a GPU;
#   2. fails unless JAX sees a GPU;
#   3. runs the whole study at toy size (tests/presets/smoke.yaml) through Snakemake on the GPU;
#   4. both benchmarks at the default config (ours on the GPU, the PyTorch peer on the CPU);
#   5. 300 training steps each of the paper preset's detector and pix2pix
#      (python -m billetjax.bench steps), printing steps/s, images/s and the device's peak memory;
#   6. writes $OUT/summary.json (every step's time, exit status and JSON line) and prints a table.
#
# Environment: VENV (default .venv), OUT (default logs/gpu-check), STEPS (default 300).
# REHEARSE=1 runs the same sequence on the CPU at toy sizes without installing (the smoke run as
# `snakemake -n`, 1-round benchmarks, 2 steps of the smoke preset's models), to check the script
# and the summary on a machine without a GPU; its summary says backend "cpu" and proves nothing about GPUs.
set -euo pipefail

cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
OUT=${OUT:-logs/gpu-check}
STEPS=${STEPS:-300}
REHEARSE=${REHEARSE:-0}
PY="$VENV/bin/python"
export PATH="$(cd "$VENV/bin" && pwd):$PATH"
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/steps.tsv

sees_gpu() { "$PY" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; }

if [ "$REHEARSE" = 1 ]; then
    echo "== rehearsal on the CPU: toy sizes, no install, nothing here measures a GPU"
    SMOKE_ARGS=(-n)
    BENCH_ARGS=(--rounds 1 --steps 1)
    PAPER=tests/presets/smoke.yaml
    STEPS=2
else
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
        echo "gpu-check: no NVIDIA GPU here (nvidia-smi is missing or sees no device)" >&2
        exit 1
    fi
    nvidia-smi -L | tee "$OUT/nvidia-smi.log"
    if ! sees_gpu; then
        echo "== installing billetjax with jax[cuda12] into $VENV"
        "$PY" -m pip install --quiet -e '.[cuda12,test]'
    fi
    if ! sees_gpu; then
        echo "gpu-check: JAX in $VENV sees no GPU after installing jax[cuda12]:" >&2
        "$PY" -c 'import jax; print("backend", jax.default_backend(), jax.devices())' >&2 || true
        exit 1
    fi
    SMOKE_ARGS=()
    BENCH_ARGS=(--rounds 3)
    PAPER=presets/paper.yaml
fi
"$PY" -c 'import jax; print("JAX", jax.__version__, "devices", jax.devices())' | tee "$OUT/jax.log"

# step NAME CMD...: run CMD, its output in $OUT/NAME.log, its last JSON line in $OUT/NAME.json,
# NAME, exit status and seconds in $OUT/steps.tsv; a failed step fails the check at the end.
failed=0
step() {
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS rc=0
    "$@" > "$OUT/$name.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/steps.tsv"
    grep '^{' "$OUT/$name.log" | tail -n 1 > "$OUT/$name.json" || true
    tail -n 3 "$OUT/$name.log" | cut -c1-300
    if [ "$rc" != 0 ]; then echo "== $name FAILED (exit $rc), see $OUT/$name.log"; failed=1; fi
}

rm -rf "$OUT/smoke"
# Jobs beside the JAX job must not reserve most of the GPU's memory for themselves.
step smoke env XLA_PYTHON_CLIENT_PREALLOCATE=false \
    snakemake --snakefile Snakefile --directory "$OUT/smoke" --configfile tests/presets/smoke.yaml \
    --cores all --resources gpu=1 --retries 0 "${SMOKE_ARGS[@]}"
step bench_detector "$PY" -m billetjax.bench detector "${BENCH_ARGS[@]}"
step bench_pix2pix "$PY" -m billetjax.bench pix2pix "${BENCH_ARGS[@]}"
step paper_detector "$PY" -m billetjax.bench steps detector --config "$PAPER" --steps "$STEPS"
step paper_pix2pix "$PY" -m billetjax.bench steps pix2pix --config "$PAPER" --steps "$STEPS"

"$PY" tests/gpu/summary.py "$OUT" "$REHEARSE"
exit $failed
