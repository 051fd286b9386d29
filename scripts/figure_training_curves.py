"""results/figures/training_curves.png: loss and validation mAP per experiment, Figure 10."""

from billetjax.evaluation.figures import training_curves_figure
from billetjax.runtime import log_to

log_to(snakemake.log[0])
runs = {(int(e), int(s)): path for (e, s), path in zip(snakemake.params.runs, snakemake.input)}
training_curves_figure(runs, snakemake.output[0])
