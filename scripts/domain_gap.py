"""results/tables/domain_gap.csv: held-out AUC of a real-vs-synthetic stamp classifier per stamp
bank (rule domain_gap)."""

from billetjax.evaluation.domain_gap import write_domain_gap_table
from billetjax.runtime import log_to

log_to(snakemake.log[0])
config = snakemake.params.config
write_domain_gap_table(
    snakemake.output[0],
    real_paths=list(snakemake.input.real),
    gan_banks=dict(zip(snakemake.params.checkpoints, snakemake.input.gan)),
    classic_bank=snakemake.input.classic,
    settings=config["evaluation"]["domain_gap"],
    n_samples=config["evaluation"]["bootstrap_samples"],
    root_seed=config["seed"],
    sources=snakemake.params.sources,
)
