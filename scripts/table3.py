"""results/tables/table3.csv: every test set's rows in Table 3's order (rule table3)."""

from billetjax.evaluation.tables import write_table3
from billetjax.runtime import log_to

log_to(snakemake.log[0])
write_table3(list(snakemake.input), snakemake.output[0])
