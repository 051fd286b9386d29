"""results/tables/comparisons.csv: every experiment against the reference, paired (rule comparisons)."""

from billetjax.evaluation.comparisons import write_comparison_table
from billetjax.experiments import table1
from billetjax.runtime import log_to

log_to(snakemake.log[0])
config = snakemake.params.config
write_comparison_table(
    metrics_paths=list(snakemake.input),
    out_path=snakemake.output[0],
    experiments=table1(config["experiments"], config["synth"]["method"]),
    evaluation=config["evaluation"],
    root_seed=config["seed"],
)
