"""Train one Faster R-CNN (experiment x seed) and write its weights and training history."""

from billetjax.runtime import enable_jax_cache, limit_cpu_threads, log_to

from billetjax.seeds import run_seed

log_to(snakemake.log[0])
limit_cpu_threads(snakemake.threads)
enable_jax_cache()

from billetjax.detector.spec import DetectorConfig  # noqa: E402
from billetjax.detector.train import train  # noqa: E402

config = snakemake.params.config
train(
    snakemake.input.train,
    snakemake.input.val,
    snakemake.output.params,
    snakemake.output.history,
    snakemake.params.state_dir,
    DetectorConfig.from_config(config["detector"]),
    config["image_size_px"],
    run_seed(config["seed"], "detector", int(snakemake.wildcards.seed)),
)
