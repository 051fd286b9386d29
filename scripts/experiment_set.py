"""Write one experiment's training and validation sets (Table 1)."""

from billetjax.runtime import log_to

log_to(snakemake.log[0])

from billetjax.experiments import Experiment, make_experiment_set  # noqa: E402

make_experiment_set(
    Experiment.from_dict(snakemake.params.experiment),
    snakemake.params.config,
    int(snakemake.wildcards.seed),
    snakemake.input.real,
    snakemake.input.synthetic[0] if snakemake.input.synthetic else None,
    snakemake.output.train,
    snakemake.output.val,
)
