"""Draw a sample of the stamp masks segmented from box-only annotations beside their crops."""

from billetjax.runtime import log_to

log_to(snakemake.log[0])

from billetjax.data.box_masks import box_mask_figure  # noqa: E402

box_mask_figure([snakemake.input.train, snakemake.input.val], snakemake.output[0], seed=snakemake.params.seed)
