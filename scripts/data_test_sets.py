"""Cut the test sets (Table 2, data.test_sets) from the real test pool, each with its lexicon."""

from billetjax.runtime import log_to

log_to(snakemake.log[0])

from billetjax.data.refusal import refusals_as_messages  # noqa: E402
from billetjax.data.testsets import make_test_sets, write_test_set_lexicons  # noqa: E402

with refusals_as_messages():
    sets = make_test_sets(snakemake.input.pool, list(snakemake.output.sets), snakemake.params.test_sets)
    write_test_set_lexicons(snakemake.input.lexicon, sets, list(snakemake.output.lexicons))
