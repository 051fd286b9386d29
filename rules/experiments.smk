# Experiment sets of Table 1: for every experiment (row of experiments.sets) and seed, a training
# and a validation set mixing real and synthetic images at the experiment's ratio.


rule experiment_set:
    input:
        real="results/data/real/train_pool.json",
        synthetic=synthetic_pool_for,
    output:
        train="results/experiments/exp{experiment}/seed{seed}/train.json",
        val="results/experiments/exp{experiment}/seed{seed}/val.json",
    params:
        # Only this row (sizes, source, plan) and the split settings: adding a row to
        # experiments.sets leaves the other experiments' sets and detectors as they are.
        experiment=experiment_row,
        config={
            "seed": config["seed"],
            "experiments": {k: config["experiments"][k] for k in ("validation_fraction", "hard_share")},
        },
    log:
        "logs/experiments/exp{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/experiments/exp{experiment}_seed{seed}.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/experiment_set.py"
