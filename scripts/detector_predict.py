"""Run a trained detector on one test set and write its detections as COCO results."""

from billetjax.utils import enable_jax_cache, log_to

log_to(snakemake.log[0])
enable_jax_cache()

from billetjax.detector.predict import predict  # noqa: E402

predict(snakemake.input.params, snakemake.input.testset, snakemake.output[0])
