"""results/tables/domain_gap_features.csv: the synthetic characters against the real ones in the
all-real detector's feature space (rule feature_gap)."""

from billetjax.runtime import enable_jax_cache, limit_cpu_threads, log_to

log_to(snakemake.log[0])
limit_cpu_threads(snakemake.threads)
enable_jax_cache()

from billetjax.evaluation.feature_gap import pool_names, write_feature_gap_table  # noqa: E402

config = snakemake.params.config
write_feature_gap_table(snakemake.output[0], snakemake.input.detector, snakemake.input.real,
                        pool_names(list(snakemake.input.pools)), config["evaluation"], config["seed"])
