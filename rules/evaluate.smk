# Evaluation and report: each model's detections on each test set -> metrics, the tables of Table 3
# (both: docs/architecture.md, "Contracts") and the evaluation figures (Table 3, Figure 10, a gallery).

# What the numbers depend on: the evaluation settings without the gallery's choice of run and the
# comparisons' and domain gap's settings, so that picking another gallery run or margin redraws a
# figure or a table instead of re-evaluating every model.
NOT_METRICS_KEYS = ("gallery", "reference_experiment", "margins", "margin_fraction", "primary", "summary_metric",
                    "domain_gap")
METRICS_CONFIG = {
    "seed": config["seed"],
    "evaluation": {k: v for k, v in config["evaluation"].items() if k not in NOT_METRICS_KEYS},
}


rule evaluate_detections:
    input:
        gt="results/data/testsets/testset{testset}.json",
        lexicon="results/data/testsets/testset{testset}_lexicon.csv",
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
        config={**METRICS_CONFIG, "experiments": config["experiments"], "synth": {"method": config["synth"]["method"]}},
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


rule id_read_curve:
    input:
        expand(
            "results/metrics/exp{experiment}/seed{seed}/testset{testset}.json",
            experiment=EXPERIMENTS,
            seed=SEEDS,
            testset=TEST_SETS,
        ),
    output:
        table=report(
            "results/tables/id_read_curve.csv",
            caption="../docs/captions/id_read_curve_csv.rst",
            category="Table 3",
        ),
        figure=report(
            "results/figures/id_read_curve.png",
            caption="../docs/captions/id_read_curve.rst",
            category="Table 3",
        ),
    params:
        experiment=config["evaluation"]["reference_experiment"],
        misread_levels_pct=config["evaluation"]["id_reading"]["misread_levels_pct"],
        test_set_names=[s["name"] for s in config["data"]["test_sets"]],
    log:
        "logs/evaluate/id_read_curve.log",
    benchmark:
        "benchmarks/evaluate/id_read_curve.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/id_read_curve.py"


FINAL_TARGETS += expand("results/tables/testset{testset}.csv", testset=TEST_SETS)
FINAL_TARGETS += [
    "results/tables/id_read_curve.csv",
    "results/figures/id_read_curve.png",
    "results/tables/table3.csv",
    "results/figures/table3.png",
    "results/figures/training_curves.png",
    "results/figures/detections_gallery.png",
]


# --- Does the study answer its question? Every experiment against a reference (paired over the
# same test billets and seeds, with non-inferiority verdicts), the replacement curve along the
# synthetic share, and how far the synthetic stamps are from the real ones
# (billetjax/evaluation/comparisons.py, billetjax/evaluation/domain_gap.py).

REFERENCE = config["evaluation"]["reference_experiment"]
if not 1 <= REFERENCE <= len(TABLE1):
    raise ValueError(
        f"evaluation.reference_experiment = {REFERENCE}, but experiments.sets has {len(TABLE1)} rows; "
        f"pick 1..{len(TABLE1)}"
    )
TEST_SET_NAMES = [s["name"] for s in config["data"]["test_sets"]]
# The domain gap needs the synthesis stage's stamp banks: a study without synthetic images makes
# none, and a workflow without rules/synth.smk (the evaluation-only test workflow) cannot.
USES_SYNTHESIS = any(e.uses_synthetic for e in TABLE1) and workflow.is_rule("synth_stamps_classic")
# An all-synthetic experiment on the replacement curve: its drop is drawn against the domain gap.
ALL_SYNTHETIC_ON_CURVE = any(
    e.synthetic_pct == 100 and e.is_plain and e.n_images == TABLE1[REFERENCE - 1].n_images for e in TABLE1
)


# The plan of the comparisons and the exchange rate (docs/statistics.md): what they depend on.
COMPARISON_KEYS = ("reference_experiment", "margins", "margin_fraction", "primary", "bootstrap_samples")
# The exchange rate needs real-only rows at two or more numbers of real images.
HAS_DOSE_CURVE = len({e.n_real for e in TABLE1 if e.is_plain and not e.uses_synthetic and e.n_real > 0}) >= 2 and any(
    e.uses_synthetic for e in TABLE1
)


rule comparisons:
    input:
        expand(
            "results/metrics/exp{experiment}/seed{seed}/testset{testset}.json",
            experiment=EXPERIMENTS,
            seed=SEEDS,
            testset=TEST_SETS,
        ),
    output:
        report(
            "results/tables/comparisons.csv",
            caption="../docs/captions/comparisons_csv.rst",
            category="Table 3",
        ),
    params:
        config={
            "seed": config["seed"],
            "experiments": config["experiments"],
            "synth": {"method": config["synth"]["method"]},
            "evaluation": {k: config["evaluation"][k] for k in COMPARISON_KEYS},
        },
    log:
        "logs/evaluate/comparisons.log",
    benchmark:
        "benchmarks/evaluate/comparisons.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/comparisons.py"


rule exchange_rate:
    input:
        expand(
            "results/metrics/exp{experiment}/seed{seed}/testset{testset}.json",
            experiment=EXPERIMENTS,
            seed=SEEDS,
            testset=TEST_SETS,
        ),
    output:
        table=report(
            "results/tables/exchange_rate.csv",
            caption="../docs/captions/exchange_rate_csv.rst",
            category="Replacement",
        ),
        figure=report(
            "results/figures/dose_response.png",
            caption="../docs/captions/dose_response.rst",
            category="Replacement",
        ),
    params:
        config={
            "seed": config["seed"],
            "experiments": config["experiments"],
            "synth": {"method": config["synth"]["method"]},
            "evaluation": {k: config["evaluation"][k] for k in COMPARISON_KEYS},
        },
        test_set_names=TEST_SET_NAMES,
    log:
        "logs/evaluate/exchange_rate.log",
    benchmark:
        "benchmarks/evaluate/exchange_rate.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/exchange_rate.py"


rule replacement_curve:
    input:
        comparisons="results/tables/comparisons.csv",
        exchange=["results/tables/exchange_rate.csv"] if HAS_DOSE_CURVE else [],
    output:
        figure=report(
            "results/figures/replacement_curve.png",
            caption="../docs/captions/replacement_curve.rst",
            category="Replacement",
        ),
        summary=report(
            "results/tables/replacement_summary.txt",
            caption="../docs/captions/replacement_summary.rst",
            category="Replacement",
        ),
    params:
        metric=config["evaluation"]["summary_metric"],
        primary=config["evaluation"]["primary"],
        experiments=config["experiments"],
        synth_method=config["synth"]["method"],
        test_set_names=TEST_SET_NAMES,
    log:
        "logs/evaluate/replacement_curve.log",
    benchmark:
        "benchmarks/evaluate/replacement_curve.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/replacement_curve.py"


rule domain_gap:
    input:
        real=expand("results/data/stamps/{split}.npz", split=("train", "val")),
        gan=expand("results/synth/gan/fit{fit}/stamps_step{ckpt}.npz", fit=FIRST_FIT, ckpt=config["synth"]["checkpoints"])
        if "gan" in SYNTHETIC_SOURCES
        else [],
        classic=f"results/synth/classic/fit{FIRST_FIT}/stamps_classic.npz",
    output:
        report(
            "results/tables/domain_gap.csv",
            caption="../docs/captions/domain_gap_csv.rst",
            category="Synthesis",
        ),
    params:
        config={
            "seed": config["seed"],
            "evaluation": {k: config["evaluation"][k] for k in ("domain_gap", "bootstrap_samples")},
        },
        # the renderers some experiment mixes in: their rows are marked used_by_pool
        sources=SYNTHETIC_SOURCES,
        checkpoints=config["synth"]["checkpoints"] if "gan" in SYNTHETIC_SOURCES else [],
    log:
        "logs/evaluate/domain_gap.log",
    benchmark:
        "benchmarks/evaluate/domain_gap.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/domain_gap.py"


rule feature_gap:
    input:
        detector=f"results/detector/exp{REFERENCE}/seed{SEEDS[0]}/params.msgpack",
        real="results/data/real/test_pool.json",
        pools=[synthetic_pool(source, FIRST_FIT) for source in sorted(set(SYNTHETIC_SOURCES) | {"classic"})],
    output:
        report(
            "results/tables/domain_gap_features.csv",
            caption="../docs/captions/domain_gap_features_csv.rst",
            category="Synthesis",
        ),
    params:
        config={
            "seed": config["seed"],
            "evaluation": {k: config["evaluation"][k] for k in ("domain_gap",)},
        },
    threads: 1
    resources:
        gpu=JAX_GPUS,
    log:
        "logs/evaluate/feature_gap.log",
    benchmark:
        "benchmarks/evaluate/feature_gap.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/feature_gap.py"


rule figure_domain_gap:
    input:
        gap="results/tables/domain_gap.csv",
        comparisons=["results/tables/comparisons.csv"] if ALL_SYNTHETIC_ON_CURVE else [],
    output:
        report(
            "results/figures/domain_gap.png",
            caption="../docs/captions/domain_gap.rst",
            category="Synthesis",
        ),
    params:
        metric=config["evaluation"]["summary_metric"],
        test_set_names=TEST_SET_NAMES,
    log:
        "logs/evaluate/figure_domain_gap.log",
    benchmark:
        "benchmarks/evaluate/figure_domain_gap.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/figure_domain_gap.py"


FINAL_TARGETS += [
    "results/tables/comparisons.csv",
    "results/figures/replacement_curve.png",
    "results/tables/replacement_summary.txt",
]
if HAS_DOSE_CURVE:
    FINAL_TARGETS += ["results/tables/exchange_rate.csv", "results/figures/dose_response.png"]
if USES_SYNTHESIS:
    FINAL_TARGETS += [
        "results/tables/domain_gap.csv",
        "results/figures/domain_gap.png",
        "results/tables/domain_gap_features.csv",
    ]
