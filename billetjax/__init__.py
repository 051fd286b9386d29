"""billetjax: how much GAN-made synthetic training data can replace real data (Faltings et al. 2022)."""

__version__ = "0.1.0"

from billetjax.runtime import use_cpu_xla_flags as _use_cpu_xla_flags

# Before any stage imports JAX: XLA:CPU's fastest kernels for our models (billetjax.runtime).
_use_cpu_xla_flags()
