"""Export a trained detector as a reader that runs with JAX and numpy alone (rule reader_export)."""

from pathlib import Path

from billetjax.runtime import limit_cpu_threads, log_to

log_to(snakemake.log[0])
limit_cpu_threads(snakemake.threads)

from billetjax.read.export import export_reader  # noqa: E402

export_reader(snakemake.input.params, snakemake.input.train, Path(snakemake.output[0]).parent,
              snakemake.params.config, int(snakemake.wildcards.experiment), int(snakemake.wildcards.seed))
