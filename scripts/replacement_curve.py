"""results/figures/replacement_curve.png and results/tables/replacement_summary.txt (rule
replacement_curve)."""

from billetjax.evaluation.comparisons import write_replacement_summary
from billetjax.evaluation.figures import replacement_curve_figure
from billetjax.experiments import table1
from billetjax.runtime import log_to

log_to(snakemake.log[0])
params = snakemake.params
write_replacement_summary(snakemake.input.comparisons, snakemake.output.summary, params.metric,
                          table1(params.experiments, params.synth_method), params.test_set_names,
                          primary=params.primary, exchange_csv=snakemake.input.exchange[0] if snakemake.input.exchange else None)
replacement_curve_figure(snakemake.input.comparisons, snakemake.output.figure, params.test_set_names, params.metric)
