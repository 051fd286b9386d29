"""Draw a strip of masks and their rendered stamps from one stamp bank."""

from billetjax.runtime import log_to

log_to(snakemake.log[0])

from billetjax.synth.figures import stamp_strip  # noqa: E402

stamp_strip(snakemake.input[0], snakemake.output[0])
