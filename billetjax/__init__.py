"""billetjax: how much GAN-made synthetic training data can replace real data (Faltings et al. 2022)."""

__version__ = "0.1.0"
