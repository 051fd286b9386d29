"""Figure 4: validation masks, targets and one generator checkpoint's synthesis."""

from billetjax.runtime import enable_jax_cache, log_to

from billetjax.seeds import stage_seed

log_to(snakemake.log[0])
enable_jax_cache()

from billetjax.pix2pix.figures import gan_samples_figure  # noqa: E402

gan_samples_figure(
    snakemake.input.generator, snakemake.input.val, snakemake.output[0],
    stage_seed(snakemake.params.seed, "gan-samples"),
)
