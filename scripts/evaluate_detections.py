"""Metrics of one experiment × seed × test set from its detections (rule evaluate_detections)."""

from billetjax.evaluation.evaluate import evaluate_files
from billetjax.runtime import log_to

log_to(snakemake.log[0])
config = snakemake.params.config
evaluate_files(
    gt_path=snakemake.input.gt,
    detections_path=snakemake.input.detections,
    out_path=snakemake.output[0],
    evaluation=config["evaluation"],
    root_seed=config["seed"],
    experiment=int(snakemake.wildcards.experiment),
    seed=int(snakemake.wildcards.seed),
    test_set=int(snakemake.wildcards.testset),
    lexicon_path=snakemake.input.lexicon,
)
