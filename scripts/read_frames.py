"""Read a folder of new frames with an exported reader; write readings and pre-labels (rule read_frames)."""

from pathlib import Path

from billetjax.runtime import enable_jax_cache, limit_cpu_threads, log_to

log_to(snakemake.log[0])
limit_cpu_threads(snakemake.threads)
enable_jax_cache()

from billetjax.read import ReadOptions, load_reader, read_frames  # noqa: E402

reader = load_reader(Path(snakemake.input.reader[0]).parent)
read_frames(reader, snakemake.input.images, Path(snakemake.output[0]).parent,
            ReadOptions.from_config(snakemake.params.read))
