"""Crop the stamp pairs (image, polygon mask) that pix2pix trains on (paper Figure 1)."""

from billetjax.runtime import log_to

from billetjax.seeds import stage_seed

log_to(snakemake.log[0])

from billetjax.data.refusal import refusals_as_messages  # noqa: E402
from billetjax.data.stamps import make_stamp_pairs  # noqa: E402

config = snakemake.params.config
stamps = config["data"]["stamps"]
with refusals_as_messages():
    make_stamp_pairs(
        snakemake.input[0], snakemake.output.train, snakemake.output.val, stamps["size_px"],
        stamps["train"], stamps["val"], stamps["margin"], stage_seed(config["seed"], "stamp-pairs"),
    )
