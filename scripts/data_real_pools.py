"""Write the real train and test pools (simulated, or imported from the user's COCO files)."""

# Guarded: worker processes start by 'spawn', which re-imports this script as __mp_main__.
if __name__ == "__main__":
    from billetjax.runtime import log_to

    log_to(snakemake.log[0])

    from billetjax.data.pools import make_real_pools
    from billetjax.data.refusal import refusals_as_messages
    from billetjax.glyphs import GlyphFileError

    with refusals_as_messages(GlyphFileError):
        make_real_pools(snakemake.params.config, snakemake.output.train, snakemake.output.test,
                        snakemake.output.train_images, snakemake.output.test_images, snakemake.output.lexicon,
                        workers=snakemake.threads, glyphs=snakemake.params.glyphs)
