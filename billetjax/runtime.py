"""How a stage's process runs: its log, its progress lines, its CPU threads and XLA flags, JAX's
compilation cache, whether JAX has a GPU, and how it starts worker processes."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path


def log_to(path: str | os.PathLike | None, level: int = logging.INFO) -> logging.Logger:
    """Send logging (and stdout/stderr, for tracebacks and third-party prints) to a log file."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if path is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(path, "a", buffering=1)
        sys.stdout = stream
        sys.stderr = stream
        handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    logging.captureWarnings(True)
    return root


class Progress:
    """Logs `done/total`, rate and ETA at most every `every_s` seconds."""

    def __init__(self, total: int, what: str, logger: logging.Logger, every_s: float = 10.0):
        self.total, self.what, self.logger, self.every_s = total, what, logger, every_s
        self.start = self.last = time.perf_counter()

    def update(self, done: int, extra: str = "") -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        self.logger.info(
            "%s %d/%d (%.1f/s, ETA %.0f s)%s", self.what, done, self.total, rate, eta,
            f" {extra}" if extra else "",
        )


def enable_jax_cache(path: str | os.PathLike | None = None) -> Path:
    """Enable JAX's persistent compilation cache so equal shapes compile once across jobs.

    The folder is `$BILLETJAX_JAX_CACHE`, else `~/.cache/billetjax/jax`. Every script that runs a
    JAX model calls this first, so it also logs the GPU the job was given.
    """
    import jax

    # The device a job was given (SLURM sets this for GPU jobs); the log shows it for every JAX job.
    logging.getLogger(__name__).info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
    folder = Path(path or os.environ.get("BILLETJAX_JAX_CACHE") or Path.home() / ".cache/billetjax/jax")
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Cache every compilation that takes a noticeable time, not only the very long ones.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


# XLA:CPU hands convolutions and matrix products to YNNPACK by default (jaxlib 0.9 and later);
# with it off they run on XLA's own kernels (Eigen), which ran the default detector's training step
# 15-20 % faster on a 2-core AMD EPYC VM (one thread, 160 px windows: 7.0-7.3 -> 8.2-8.4 steps/s;
# two threads, 256 px: 2.8-3.2 -> 3.4-3.6) and pix2pix's as fast (docs/performance.md). The flag
# is unknown to older jaxlibs, which XLA would refuse, so it is only set where jaxlib has it.
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
CPU_XLA_FLAGS_SINCE_JAXLIB = (0, 9)


def _add_xla_flags(extra) -> None:
    """Append flags to `$XLA_FLAGS`, except those the user's `$XLA_FLAGS` already names."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    named = {f.split("=")[0] for f in flags}
    os.environ["XLA_FLAGS"] = " ".join(flags + [f for f in extra if f.split("=")[0] not in named])


def use_cpu_xla_flags() -> None:
    """Before JAX starts (`import billetjax` calls it): XLA:CPU's kernels measured fastest here
    (`CPU_XLA_FLAGS`) where the installed jaxlib knows the flags. A flag already named in
    `$XLA_FLAGS` is left as the user set it, e.g. `--xla_cpu_experimental_ynn_fusion_type=
    individual_dot,...` to bring YNNPACK back. GPU programs are unaffected."""
    from importlib import metadata

    try:
        version = tuple(int(part) for part in metadata.version("jaxlib").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return
    if version >= CPU_XLA_FLAGS_SINCE_JAXLIB:
        _add_xla_flags(CPU_XLA_FLAGS)


# XLA:CPU without intra-op parallelism: each operation runs on one thread (independent
# operations may still overlap: a one-thread pix2pix step measured 1.7 cores busy), so several
# such processes share the cores instead of each spreading over all of them. Only `--xla_...`
# flags belong here: XLA stops reading `$XLA_FLAGS` at the first word without the dashes and
# silently drops every flag after it.
SINGLE_THREAD_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false",)


def limit_cpu_threads(threads: int) -> None:
    """Before JAX starts: a job that declares one thread (`threads` = 1) gets XLA:CPU without
    intra-op parallelism (`SINGLE_THREAD_XLA_FLAGS`, added to `$XLA_FLAGS`); more threads leave
    XLA's default (all cores). On a 2-core VM two such default trainings side by side ran 1.31x
    the bare steps of one training on both cores (1.17x as whole trainings, augmentation and
    validation included): one training leaves a quarter of the machine idle. GPU programs are
    unaffected."""
    if int(threads) != 1:
        return
    if "jax" in sys.modules:
        logging.getLogger(__name__).warning("limit_cpu_threads after jax was imported: it may come too late")
    _add_xla_flags(SINGLE_THREAD_XLA_FLAGS)
    logging.getLogger(__name__).info("one thread: XLA_FLAGS=%s", os.environ["XLA_FLAGS"])


# JAX's GPU backends ship as PJRT plugins (`pip install 'jax[cuda12]'` installs jax-cuda12-pjrt).
GPU_PLUGIN = re.compile(r"jax[-_](cuda|rocm)\d+[-_](pjrt|plugin)", re.IGNORECASE)


def jax_gpu_installed() -> bool:
    """Whether JAX jobs will run on a GPU: `$BILLETJAX_GPUS` (0 or 1) when set, else whether a
    GPU plugin of JAX is installed. Read without importing JAX; the workflow's JAX rules declare
    `gpu=1` only then, so that on a CPU-only machine they run side by side on its cores."""
    forced = os.environ.get("BILLETJAX_GPUS")
    if forced is not None:
        if forced not in ("0", "1"):
            raise ValueError(f"BILLETJAX_GPUS must be 0 or 1, got {forced!r}")
        return forced == "1"
    from importlib import metadata

    return any(GPU_PLUGIN.fullmatch(d.metadata["Name"] or "") for d in metadata.distributions())


def worker_context():
    """Processes started by 'spawn': forking a parent whose OpenCV (or JAX) threads are running
    can deadlock the child, and the parent may be a test run or a notebook that used them."""
    import multiprocessing

    return multiprocessing.get_context("spawn")
