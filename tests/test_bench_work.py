"""What the benchmarks report beside speed (billetjax.bench.work): FLOPs and memory of a compiled
step, the CPU's theoretical peak from its flags, achieved FLOP/s and fractions of the peaks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from billetjax.bench import work


def test_compiled_costs_of_a_matrix_product():
    n = 128
    a = jnp.ones((n, n), jnp.float32)
    compiled, seconds = work.aot_compile(jax.jit(jnp.matmul), a, a)
    costs = work.compiled_costs(compiled)
    assert costs["flops"] == 2 * n**3 and seconds > 0
    # two 64 KiB arguments and a 64 KiB result, nothing donated
    assert costs["memory"]["argument_bytes"] == 2 * n * n * 4
    assert costs["memory"]["output_bytes"] == n * n * 4 and costs["memory"]["alias_bytes"] == 0
    assert costs["peak_bytes"] == costs["memory"]["temp_bytes"] + 3 * n * n * 4


def test_donated_state_is_counted_once():
    x = jnp.ones((256, 256), jnp.float32)
    compiled, _ = work.aot_compile(jax.jit(lambda s: s * 2.0, donate_argnums=0), x)
    memory = work.compiled_costs(compiled)["memory"]
    assert memory["alias_bytes"] == 256 * 256 * 4
    assert work.compiled_costs(compiled)["peak_bytes"] == memory["temp_bytes"] + 256 * 256 * 4


@pytest.mark.parametrize("vendor, family, flags, expected", [
    ("AuthenticAMD", 25, {"avx2", "fma", "avx512f"}, 32),  # Zen 4: AVX-512 on 256-bit pipes
    ("AuthenticAMD", 26, {"avx2", "fma", "avx512f"}, 64),
    ("GenuineIntel", 6, {"avx2", "fma", "avx512f"}, 64),
    ("GenuineIntel", 6, {"avx2", "fma"}, 32),
    ("AuthenticAMD", 23, {"avx2", "fma"}, 32),
    ("GenuineIntel", 6, {"avx", "sse4_2"}, None),
])
def test_flop_per_cycle_from_the_flags(vendor, family, flags, expected):
    per_cycle, why = work.flop_per_cycle(vendor, family, flags)
    assert per_cycle == expected and why


def test_theoretical_peak_names_its_basis():
    peak = work.theoretical_cpu_peak()
    if peak["flop_per_s"] is None:
        assert peak["basis"].startswith("not determinable")
    else:
        assert "FLOP/cycle" in peak["basis"] and "MHz" in peak["basis"]
        assert 1e9 < peak["flop_per_s"] < 1e14


def test_work_report_uses_one_flop_count_for_both_sides():
    peaks = {"cpu_peak_flop_per_s_measured": 100e9, "cpu_peak_flop_per_s_theoretical": 200e9}
    report = work.work_report(10e9, 2.0, 4.0, peaks)
    assert report["ours_flop_per_s"] == 20e9 and report["peer_flop_per_s"] == 40e9
    assert report["ours_fraction_of_peak_measured"] == 0.2
    assert report["peer_fraction_of_peak_theoretical"] == 0.2
    untimed = work.work_report(10e9, None, None, peaks, prefix="inference_")
    assert untimed["ours_inference_flop_per_s"] is None
    assert untimed["peer_inference_fraction_of_peak_measured"] is None
    # on a GPU ours is measured against the device's matrix-product rate, not the CPU's peak
    gpu = work.work_report(10e9, 100.0, 1.0, {**peaks, "device_matmul_flop_per_s": 500e12})
    assert gpu["ours_fraction_of_peak_measured"] == 0.002 and gpu["ours_fraction_of_peak_theoretical"] is None
    assert gpu["peer_fraction_of_peak_measured"] == 0.1
