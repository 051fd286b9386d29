"""Benchmarks comparing our jitted steps with PyTorch on the same machine (`python -m billetjax.bench`)."""
