"""Draw real billet samples per site and visibility class with their boxes."""

from billetjax.runtime import log_to

log_to(snakemake.log[0])

from billetjax.data.report import real_samples_figure  # noqa: E402

real_samples_figure(snakemake.input[0], snakemake.output[0], seed=snakemake.params.seed)
