"""The GAN's loss curves from results/gan/history.csv."""

from billetjax.runtime import log_to

log_to(snakemake.log[0])

from billetjax.pix2pix.figures import loss_figure  # noqa: E402

loss_figure(snakemake.input[0], snakemake.output[0])
