"""results/figures/table3.png: Table 3 as a figure with its intervals (rule figure_table3)."""

from billetjax.evaluation.figures import table3_figure
from billetjax.runtime import log_to

log_to(snakemake.log[0])
table3_figure(snakemake.input[0], snakemake.output[0])
