# Helpers shared by every stage: config validation, wildcard constraints, path builders.

import os
from pathlib import Path

from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

# Runs a script's `import billetjax` against this checkout even without `pip install -e .`.
workflow_root = Path(workflow.basedir)

# Every stage appends the final artefacts it makes; `rule all` asks for them.
FINAL_TARGETS = []

TEST_SETS = [1, 2, 3, 4, 5]
EXPERIMENTS = list(range(1, len(config["experiments"]["sets"]) + 1))
SEEDS = list(config["experiments"]["seeds"])


wildcard_constraints:
    experiment=r"\d+",
    seed=r"\d+",
    testset=r"[1-5]",
    ckpt=r"\d+",
    method=r"gan|classic",
    split=r"train|val",


def gan_checkpoints():
    """Steps at which the GAN keeps a checkpoint (each one a {ckpt})."""
    gan = config["gan"]
    return list(range(gan["checkpoint_every"], gan["steps"] + 1, gan["checkpoint_every"]))
