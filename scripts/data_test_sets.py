"""Cut the test sets (Table 2, data.test_sets) from the real test pool."""

from billetjax.utils import log_to

log_to(snakemake.log[0])

from billetjax.data.refusal import refusals_as_messages  # noqa: E402
from billetjax.data.testsets import make_test_sets  # noqa: E402

with refusals_as_messages():
    make_test_sets(snakemake.input[0], list(snakemake.output), snakemake.params.test_sets)
