"""Cut test sets 1-5 of Table 2 from the real test pool."""

from billetjax.utils import log_to, stage_seed

log_to(snakemake.log[0])

from billetjax.data.testsets import make_test_sets  # noqa: E402

config = snakemake.params.config
sets = config["data"]["test_sets"]
make_test_sets(
    snakemake.input[0],
    {k: path for k, path in zip(range(1, 6), snakemake.output)},
    sets["well_images"], sets["poor_images"], sets["partial_images"],
    stage_seed(config["seed"], "test-sets"),
)
