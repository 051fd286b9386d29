"""Write the blank billet surfaces that synthetic stamps are embedded into."""

# Guarded: worker processes start by 'spawn', which re-imports this script as __mp_main__.
if __name__ == "__main__":
    from billetjax.runtime import log_to

    log_to(snakemake.log[0])

    from billetjax.data.refusal import refusals_as_messages
    from billetjax.data.stamps import make_surfaces

    with refusals_as_messages():
        make_surfaces(snakemake.params.config, snakemake.input[0], snakemake.output.folder, workers=snakemake.threads)
