"""Train pix2pix on the stamp pairs, resuming from results/gan/state/ after an interruption."""

from billetjax.runtime import enable_jax_cache, limit_cpu_threads, log_to

from billetjax.seeds import run_seed

log_to(snakemake.log[0])
limit_cpu_threads(snakemake.threads)
enable_jax_cache()

from pathlib import Path  # noqa: E402

from billetjax.pix2pix.train import TrainConfig, train  # noqa: E402

config = snakemake.params.config
train(
    snakemake.input.train, snakemake.input.val, Path(snakemake.output.history).parent,
    TrainConfig.from_config(config["gan"]), run_seed(config["seed"], "gan"),
    state_dir=snakemake.params.state_dir,
)
