"""The process a stage runs in: XLA:CPU flags and threads, and whether JAX has a GPU."""


def test_a_one_thread_job_gets_xla_without_intra_op_threads(monkeypatch):
    import os

    from billetjax.runtime import SINGLE_THREAD_XLA_FLAGS, limit_cpu_threads

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=true")
    limit_cpu_threads(2)
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=true"
    limit_cpu_threads(1)  # the user's own setting of the flag wins
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=true"
    monkeypatch.delenv("XLA_FLAGS")
    limit_cpu_threads(1)
    assert os.environ["XLA_FLAGS"] == " ".join(SINGLE_THREAD_XLA_FLAGS)


def test_importing_billetjax_sets_the_cpu_flags_unless_the_user_named_them(monkeypatch):
    import os

    from billetjax.runtime import CPU_XLA_FLAGS, use_cpu_xla_flags

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    use_cpu_xla_flags()
    assert os.environ["XLA_FLAGS"] == " ".join(CPU_XLA_FLAGS) == "--xla_cpu_experimental_ynn_fusion_type="
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot --xla_dump_to=/tmp/x")
    use_cpu_xla_flags()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=individual_dot --xla_dump_to=/tmp/x"


def test_the_installed_jaxlib_accepts_the_flags_we_set():
    """XLA aborts on flags it does not know and silently drops every flag after a word without
    dashes: a jitted product under the one-thread and the CPU flags (as `import billetjax` sets
    them, in a fresh process) runs and is exact, and a flag placed after ours still takes effect
    (two host devices)."""
    import os
    import subprocess
    import sys

    from billetjax.runtime import CPU_XLA_FLAGS, SINGLE_THREAD_XLA_FLAGS

    code = ("import os, billetjax, jax, jax.numpy as jnp; x = jnp.arange(16.0).reshape(4, 4); "
            "print(os.environ['XLA_FLAGS']); print(float(jax.jit(lambda a: (a @ a).sum())(x)))")
    code += "; print(jax.device_count())"
    last = "--xla_force_host_platform_device_count=2"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XLA_FLAGS": " ".join(SINGLE_THREAD_XLA_FLAGS)})
    assert out.returncode == 0, out.stderr[-2000:]
    flags, result, devices = out.stdout.strip().splitlines()[-3:]
    assert flags.split() == [*SINGLE_THREAD_XLA_FLAGS, *CPU_XLA_FLAGS]
    assert devices == "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XLA_FLAGS": " ".join([*SINGLE_THREAD_XLA_FLAGS, last])})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "2", "a flag after ours was dropped"
    x = [[4.0 * i + j for j in range(4)] for i in range(4)]  # small integers: exact in float32
    assert float(result) == sum(x[i][k] * x[k][j] for i in range(4) for j in range(4) for k in range(4))


def test_gpu_detection_follows_the_override_and_the_installed_plugins(monkeypatch):
    import pytest

    from billetjax import runtime

    monkeypatch.setenv("BILLETJAX_GPUS", "1")
    assert runtime.jax_gpu_installed() is True
    monkeypatch.setenv("BILLETJAX_GPUS", "0")
    assert runtime.jax_gpu_installed() is False
    monkeypatch.setenv("BILLETJAX_GPUS", "yes")
    with pytest.raises(ValueError, match="BILLETJAX_GPUS must be 0 or 1"):
        runtime.jax_gpu_installed()
    monkeypatch.delenv("BILLETJAX_GPUS")
    for name in ("jax-cuda12-pjrt", "jax_cuda12_plugin", "jax-rocm60-pjrt", "jax-cuda13-plugin"):
        assert runtime.GPU_PLUGIN.fullmatch(name), name
    for name in ("jax", "jaxlib", "jax-cuda12", "flax"):
        assert not runtime.GPU_PLUGIN.fullmatch(name), name
