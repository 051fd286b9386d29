"""results/tables/testset{n}.csv: one row per experiment (rule table_testset)."""

from billetjax.evaluation.tables import write_testset_table
from billetjax.experiments import table1
from billetjax.runtime import log_to

log_to(snakemake.log[0])
config = snakemake.params.config
write_testset_table(
    metrics_paths=list(snakemake.input),
    out_path=snakemake.output[0],
    experiments=table1(config["experiments"], config["synth"]["method"]),
    test_set=int(snakemake.wildcards.testset),
    bootstrap_samples=config["evaluation"]["bootstrap_samples"],
    root_seed=config["seed"],
)
