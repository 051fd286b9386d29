"""Draw real billet samples per site and visibility class with their boxes."""

from billetjax.utils import log_to

log_to(snakemake.log[0])

from billetjax.data.report import sample_grid  # noqa: E402

sample_grid(snakemake.input[0], snakemake.output[0], seed=snakemake.params.seed)
