"""Write the real train and test pools (simulated, or imported from the user's COCO files)."""

from billetjax.utils import log_to

log_to(snakemake.log[0])

from billetjax.data.pools import make_real_pools  # noqa: E402

make_real_pools(snakemake.params.config, snakemake.output.train, snakemake.output.test, workers=snakemake.threads)
