"""Tabulate images, characters and box sizes per site and visibility for pools and test sets."""

from pathlib import Path

from billetjax.runtime import log_to

log_to(snakemake.log[0])

from billetjax.data.report import statistics  # noqa: E402

datasets = {"train_pool": snakemake.input.train, "test_pool": snakemake.input.test}
datasets |= {Path(p).stem: p for p in snakemake.input.sets}
statistics(datasets).to_csv(snakemake.output[0], index=False, float_format="%.4g")
