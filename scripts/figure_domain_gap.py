"""results/figures/domain_gap.png: the domain gap per stamp bank and the all-synthetic drop against
it (rule figure_domain_gap)."""

from billetjax.evaluation.figures import domain_gap_figure
from billetjax.runtime import log_to

log_to(snakemake.log[0])
params = snakemake.params
# Empty without an all-synthetic experiment of the reference's size.
comparisons = snakemake.input.comparisons
comparisons = [comparisons] if isinstance(comparisons, str) else list(comparisons)
domain_gap_figure(snakemake.input.gap, snakemake.output[0], comparisons[0] if comparisons else None, params.metric,
                  params.test_set_names)
