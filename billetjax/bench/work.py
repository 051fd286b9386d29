"""What a benchmarked step costs and what the machine could do.

- `compiled_costs`: the FLOPs of a compiled step from XLA's cost analysis and its memory from
  XLA's memory analysis (machine-independent: the same numbers on any CPU).
- `cpu_peaks`: the machine's float32 peak, measured (the best of a few large matrix products, in
  JAX and in PyTorch, in this process) and theoretical (FLOP per cycle from the vector-unit flags of
  /proc/cpuinfo x cores x clock), each with how it was obtained.
- `work_report`: achieved FLOP/s of ours and the peer from one FLOP count, and their fractions of
  both peaks.

Caveats, also stated in the JSON: XLA's cost analysis counts every operation (elementwise ones
too) and a `while` loop's body once (our NMS loops), so it is a lower bound on the work of a step
with loops; PyTorch's `torch.utils.flop_counter` counts matrix products and convolutions only.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[2]

# The measured peak: a float32 product of two MATMUL_N x MATMUL_N matrices, best of MATMUL_REPEATS.
MATMUL_N = 2048
MATMUL_REPEATS = 5

FLOPS_BASIS = ("XLA cost analysis of our compiled step (every operation, a while loop's body "
               "once), used for both sides: the same work")
PEAK_BYTES_BASIS = ("XLA memory analysis of the compiled step: temp + argument + output - alias "
                    "(the donated state) bytes")


def peer_thread_counts(cores: int) -> list[int]:
    """The thread counts the PyTorch peer is timed with: all cores and, where that is more than
    one, one thread as well; the peer is credited with its best. On a busy machine OpenMP's
    spinning threads can make torch 10x slower with 2 threads than with one."""
    return sorted({int(cores), 1}, reverse=True)


def rate(step, n: int, sync=lambda out: None) -> float:
    """Calls per second of `step()` over n calls, `sync` applied to the last result before the
    clock stops (`jax.block_until_ready` for asynchronously dispatched JAX work)."""
    t0 = time.perf_counter()
    out = None
    for _ in range(n):
        out = step()
    sync(out)
    return n / (time.perf_counter() - t0)


def load_config(path: str | os.PathLike) -> dict:
    """`path` merged over the repository's config.yaml (as `snakemake --configfile` merges) and
    validated against the schema, which fills in the defaults (`billetjax.config.load_config`)."""
    from billetjax.config import load_config as load

    return load(path, check=False)


def compiled_costs(compiled) -> dict:
    """FLOPs and memory of a compiled JAX program (`jitted.lower(...).compile()`):
    `flops`, `transcendentals`, `bytes_accessed` (XLA's cost analysis) and `peak_bytes` =
    temp + argument + output - alias bytes with its parts (XLA's memory analysis)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        cost = cost[0]
    memory = compiled.memory_analysis()
    parts = {
        "temp_bytes": int(memory.temp_size_in_bytes),
        "argument_bytes": int(memory.argument_size_in_bytes),
        "output_bytes": int(memory.output_size_in_bytes),
        "alias_bytes": int(memory.alias_size_in_bytes),
        "generated_code_bytes": int(memory.generated_code_size_in_bytes),
    }
    peak = parts["temp_bytes"] + parts["argument_bytes"] + parts["output_bytes"] - parts["alias_bytes"]
    return {
        "flops": as_int(cost.get("flops")),
        "transcendentals": as_int(cost.get("transcendentals")),
        "bytes_accessed": as_int(cost.get("bytes accessed")),
        "peak_bytes": int(peak),
        "memory": parts,
    }


def as_int(value) -> int | None:
    return int(round(value)) if value is not None and math.isfinite(value) else None


def aot_compile(jitted, *args):
    """`(compiled, seconds)`: lower and compile `jitted` for `args` once; the compiled program
    runs the steps, so the program analysed is the program timed."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _best_rate(fn, flops: float, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best


def matmul_rates(n: int = MATMUL_N, repeats: int = MATMUL_REPEATS) -> dict[str, float]:
    """FLOP/s of a float32 n x n matrix product, best of `repeats`: JAX on its default device
    (`jax`) and PyTorch on the CPU at its current thread count (`torch`, when installed)."""
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), dtype=np.float32)
    b_np = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n**3
    mm = jax.jit(jnp.matmul)
    a, b = jax.device_put(a_np), jax.device_put(b_np)
    mm(a, b).block_until_ready()
    rates = {"jax": _best_rate(lambda: mm(a, b).block_until_ready(), flops, repeats)}
    try:
        import torch
    except ImportError:
        return rates
    at, bt = torch.from_numpy(a_np), torch.from_numpy(b_np)
    torch.mm(at, bt)
    rates["torch"] = _best_rate(lambda: torch.mm(at, bt), flops, repeats)
    return rates


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def flop_per_cycle(vendor: str, family: int | None, flags: set[str]) -> tuple[int | None, str]:
    """float32 FLOP per cycle and core of the widest FMA units the flags show, and why.

    Flags name instruction sets, not how many units execute them, so this assumes two FMA units
    per core (Intel Xeon Scalable Gold/Platinum, AMD Zen 2 on; some Intel parts have one 512-bit
    unit, half this): AVX-512 2 x 16 lanes x 2 = 64, except AMD Zen 4 (family 25), which runs
    AVX-512 on its two 256-bit units = 32; AVX2 + FMA 2 x 8 x 2 = 32."""
    if "avx512f" in flags:
        if vendor == "AuthenticAMD" and family == 25:
            return 32, "AMD family 25 with avx512f (Zen 4: AVX-512 on two 256-bit FMA pipes)"
        return 64, f"{vendor} with avx512f (assumes two 512-bit FMA units)"
    if "avx2" in flags and "fma" in flags:
        return 32, f"{vendor} with avx2 + fma (assumes two 256-bit FMA units)"
    return None, "neither avx512f nor avx2 + fma among the flags"


def theoretical_cpu_peak() -> dict:
    """float32 peak of the CPUs this process may use: FLOP per cycle (`flop_per_cycle`) x cores x
    the clock /proc/cpuinfo reports (a VM reports its base clock; turbo may run higher).
    `flop_per_s` is None where the flags or the clock do not tell."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    family = int(info["cpu family"]) if info.get("cpu family", "").isdigit() else None
    per_cycle, why = flop_per_cycle(info.get("vendor_id", "unknown vendor"), family, flags)
    logical = len(os.sched_getaffinity(0))
    # With SMT two logical CPUs share one core's FMA units.
    siblings, cores_per_socket = info.get("siblings", ""), info.get("cpu cores", "")
    smt = int(siblings) // int(cores_per_socket) if siblings.isdigit() and cores_per_socket.isdigit() else 1
    cores = max(1, logical // max(smt, 1))
    try:
        clock_hz = float(info["cpu MHz"]) * 1e6
    except (KeyError, ValueError):
        clock_hz = None
    flop_per_s = per_cycle * cores * clock_hz if per_cycle and clock_hz else None
    basis = (f"{cores} cores x {clock_hz / 1e6:.0f} MHz (/proc/cpuinfo) x {per_cycle} FLOP/cycle: {why}"
             if flop_per_s else f"not determinable: {why if not per_cycle else 'no clock in /proc/cpuinfo'}")
    return {"flop_per_s": flop_per_s, "basis": basis, "model": info.get("model name", "unknown")}


def cpu_peaks() -> dict:
    """The CPU's float32 peak, measured and theoretical, with how each was obtained.

    Measured: the best of `matmul_rates` (PyTorch at its current thread count; JAX counts only when
    JAX runs on the CPU). On a GPU backend the JAX rate is the device's and is reported apart
    (`device_matmul_flop_per_s`)."""
    rates = matmul_rates()
    on_cpu = jax.default_backend() == "cpu"
    cpu_rates = {k: v for k, v in rates.items() if k == "torch" or on_cpu}
    best = max(cpu_rates, key=cpu_rates.get)
    theory = theoretical_cpu_peak()
    out = {
        "cpu_peak_flop_per_s_measured": as_int(cpu_rates[best]),
        "cpu_peak_measured_by": (f"float32 {MATMUL_N}x{MATMUL_N} matrix product, best of "
                                 f"{MATMUL_REPEATS}, {best} (" + ", ".join(
                                     f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in cpu_rates.items()) + ")"),
        "cpu_peak_flop_per_s_theoretical": as_int(theory["flop_per_s"]),
        "cpu_peak_theoretical_basis": theory["basis"],
        "cpu_model": theory["model"],
    }
    if not on_cpu:
        out["device_matmul_flop_per_s"] = as_int(rates["jax"])
    return out


def work_report(flops_per_step: float, ours_steps_per_s: float | None,
                peer_steps_per_s: float | None, peaks: dict, prefix: str = "") -> dict:
    """Achieved FLOP/s of ours and the peer from one FLOP count per step (the same work), and
    their fractions of the measured and the theoretical peak. Ours is measured against the device
    it ran on (the CPU's peaks, or the GPU's matrix-product rate); the peer always ran on the CPU."""
    out = {}
    ours_peak = peaks.get("device_matmul_flop_per_s", peaks["cpu_peak_flop_per_s_measured"])
    for side, rate in (("ours", ours_steps_per_s), ("peer", peer_steps_per_s)):
        achieved = flops_per_step * rate if rate and flops_per_step else None
        out[f"{side}_{prefix}flop_per_s"] = as_int(achieved)
        measured = ours_peak if side == "ours" else peaks["cpu_peak_flop_per_s_measured"]
        theoretical = (peaks["cpu_peak_flop_per_s_theoretical"]
                       if side == "peer" or "device_matmul_flop_per_s" not in peaks else None)
        out[f"{side}_{prefix}fraction_of_peak_measured"] = round(achieved / measured, 4) if achieved else None
        out[f"{side}_{prefix}fraction_of_peak_theoretical"] = (
            round(achieved / theoretical, 4) if achieved and theoretical else None)
    return out


def torch_flops(step) -> float:
    """FLOPs of one call of `step` as `torch.utils.flop_counter` counts them (matrix products and
    convolutions, forward and backward; no normalisation or elementwise work)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def available_memory_bytes() -> int | None:
    """Memory a step may use: the device's limit on a GPU (JAX's memory stats), MemAvailable of
    /proc/meminfo on the CPU; None where neither says."""
    stats = jax.devices()[0].memory_stats()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def device_peak_bytes_in_use() -> int | None:
    """The device's high-water mark of allocated bytes (JAX's memory stats; GPUs report it, the
    CPU does not: None)."""
    stats = jax.devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None
