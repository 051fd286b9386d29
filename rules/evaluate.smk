# Evaluation and report: each model's detections on each test set -> metrics, the tables of Table 3
# (both: docs/architecture.md, "Contracts") and the evaluation figures (Table 3, Figure 10, a gallery).

# What the numbers depend on: the evaluation settings without the gallery's choice of run, so that
# picking another gallery run redraws one figure instead of re-evaluating every model.
METRICS_CONFIG = {
    "seed": config["seed"],
    "evaluation": {k: v for k, v in config["evaluation"].items() if k != "gallery"},
}


rule evaluate_detections:
    input:
        gt="results/data/testsets/testset{testset}.json",
        detections="results/detections/exp{experiment}/seed{seed}/testset{testset}.json",
    output:
        "results/metrics/exp{experiment}/seed{seed}/testset{testset}.json",
    params:
        config=METRICS_CONFIG,
    log:
        "logs/evaluate/exp{experiment}/seed{seed}/testset{testset}.log",
    benchmark:
        "benchmarks/evaluate/exp{experiment}/seed{seed}/testset{testset}.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/evaluate_detections.py"


rule table_testset:
    input:
        lambda wildcards: expand(
            "results/metrics/exp{experiment}/seed{seed}/testset{testset}.json",
            experiment=EXPERIMENTS,
            seed=SEEDS,
            testset=wildcards.testset,
        ),
    output:
        "results/tables/testset{testset}.csv",
    params:
        config={**METRICS_CONFIG, "experiments": config["experiments"]},
    log:
        "logs/evaluate/table_testset{testset}.log",
    benchmark:
        "benchmarks/evaluate/table_testset{testset}.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/table_testset.py"


rule table3:
    input:
        expand("results/tables/testset{testset}.csv", testset=TEST_SETS),
    output:
        report(
            "results/tables/table3.csv", caption="../docs/captions/table3_csv.rst", category="Table 3"
        ),
    log:
        "logs/evaluate/table3.log",
    benchmark:
        "benchmarks/evaluate/table3.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/table3.py"


rule figure_table3:
    input:
        "results/tables/table3.csv",
    output:
        report(
            "results/figures/table3.png", caption="../docs/captions/table3.rst", category="Table 3"
        ),
    log:
        "logs/evaluate/figure_table3.log",
    benchmark:
        "benchmarks/evaluate/figure_table3.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/figure_table3.py"


rule figure_training_curves:
    input:
        expand(
            "results/detector/exp{experiment}/seed{seed}/history.csv",
            experiment=EXPERIMENTS,
            seed=SEEDS,
        ),
    output:
        report(
            "results/figures/training_curves.png",
            caption="../docs/captions/training_curves.rst",
            category="Detector",
        ),
    params:
        runs=[(e, s) for e in EXPERIMENTS for s in SEEDS],
    log:
        "logs/evaluate/figure_training_curves.log",
    benchmark:
        "benchmarks/evaluate/figure_training_curves.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/figure_training_curves.py"


rule figure_detections_gallery:
    input:
        gt=f"results/data/testsets/testset{gallery_run()['test_set']}.json",
        detections="results/detections/exp{experiment}/seed{seed}/testset{test_set}.json".format(**gallery_run()),
    output:
        report(
            "results/figures/detections_gallery.png",
            caption="../docs/captions/detections_gallery.rst",
            category="Detector",
        ),
    params:
        config=config_for("evaluation"),
        run=gallery_run(),
    log:
        "logs/evaluate/figure_detections_gallery.log",
    benchmark:
        "benchmarks/evaluate/figure_detections_gallery.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/figure_detections_gallery.py"


FINAL_TARGETS += expand("results/tables/testset{testset}.csv", testset=TEST_SETS)
FINAL_TARGETS += [
    "results/tables/table3.csv",
    "results/figures/table3.png",
    "results/figures/training_curves.png",
    "results/figures/detections_gallery.png",
]
