"""Compose the synthetic image pool of one method from its stamp banks and the blank surfaces."""

from billetjax.utils import log_to

log_to(snakemake.log[0])

from billetjax.synth.pool import make_pool  # noqa: E402

make_pool(
    snakemake.params.config,
    list(snakemake.input.stamps),
    snakemake.input.surfaces,
    snakemake.output.json,
    snakemake.output.images,
    method=snakemake.wildcards.method,
    workers=snakemake.threads,
)
