"""Compose the synthetic image pool of one method from its stamp banks and the blank surfaces."""

# Guarded: worker processes start by 'spawn', which re-imports this script as __mp_main__.
if __name__ == "__main__":
    from billetjax.runtime import log_to

    log_to(snakemake.log[0])

    from billetjax.synth.pool import make_pool, real_categories

    make_pool(
        snakemake.params.config,
        list(snakemake.input.stamps),
        snakemake.input.surfaces,
        snakemake.output.json,
        snakemake.output.images,
        method=snakemake.wildcards.method,
        workers=snakemake.threads,
        categories=real_categories(snakemake.input.real),
    )
