"""Draw synthetic billets with their boxes, well and partially visible (Figure 9)."""

from billetjax.runtime import log_to

log_to(snakemake.log[0])

from billetjax.synth.figures import synthetic_samples  # noqa: E402

synthetic_samples(snakemake.input[0], snakemake.output[0], seed=snakemake.params.seed)
