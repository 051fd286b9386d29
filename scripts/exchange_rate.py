"""results/tables/exchange_rate.csv and results/figures/dose_response.png (rule exchange_rate)."""

from billetjax.evaluation.exchange import write_exchange_outputs
from billetjax.experiments import table1
from billetjax.runtime import log_to

log_to(snakemake.log[0])
config = snakemake.params.config
write_exchange_outputs(
    metrics_paths=list(snakemake.input),
    table_path=snakemake.output.table,
    figure_path=snakemake.output.figure,
    experiments=table1(config["experiments"], config["synth"]["method"]),
    evaluation=config["evaluation"],
    root_seed=config["seed"],
    test_set_names=snakemake.params.test_set_names,
)
