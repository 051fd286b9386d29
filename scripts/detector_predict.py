"""Run a trained detector on every test set and write its detections as COCO results, one file
per test set (rule detector_predict)."""

from billetjax.runtime import enable_jax_cache, limit_cpu_threads, log_to

log_to(snakemake.log[0])
limit_cpu_threads(snakemake.threads)
enable_jax_cache()

from billetjax.detector.predict import predict_sets  # noqa: E402

predict_sets(snakemake.input.params, snakemake.input.testsets, snakemake.output)
