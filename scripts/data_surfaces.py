"""Write the blank billet surfaces that synthetic stamps are embedded into."""

from billetjax.utils import log_to

log_to(snakemake.log[0])

from billetjax.data.stamps import make_surfaces  # noqa: E402

make_surfaces(snakemake.params.config, snakemake.input[0], snakemake.output.folder, workers=snakemake.threads)
