"""The read–misread curves of whole-ID reading (table of every run, figure of one experiment)."""

from billetjax.runtime import log_to

log_to(snakemake.log[0])

from billetjax.evaluation.evaluate import load_metrics  # noqa: E402
from billetjax.evaluation.figures import id_read_curve_figure  # noqa: E402
from billetjax.evaluation.id_metrics import curve_table  # noqa: E402
from billetjax.evaluation.tables import write_table  # noqa: E402

curves = curve_table([load_metrics(p) for p in snakemake.input])
write_table(snakemake.output.table, curves)
id_read_curve_figure(curves, snakemake.params.experiment, snakemake.params.misread_levels_pct,
                     snakemake.params.test_set_names, snakemake.output.figure)
