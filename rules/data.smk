# Data: the real pools (simulated or the user's COCO files), Table 2's test sets, the stamp pairs
# for pix2pix, blank surfaces for synthesis, and the data's statistics and sample figure.

from billetjax.data.fingerprint import user_files_fingerprint


rule real_pools:
    input:
        user_data_inputs,
    output:
        train="results/data/real/train_pool.json",
        test="results/data/real/test_pool.json",
        lexicon="results/data/real/test_lexicon.csv",
        train_images=directory("results/data/real/train"),
        test_images=directory("results/data/real/test"),
    params:
        config=config_for("data"),
        # Whether the user's categories need glyphs (only an import checks it).
        glyphs=config_rules.glyph_requirement(config) if config["data"]["source"] == "coco" else None,
        # A content fingerprint of the user's files: a changed image reruns the import, not only a
        # changed JSON (billetjax/data/fingerprint.py).
        user_files=user_files_fingerprint(config, "train", "train_images", "test", "test_images"),
    threads: 2
    log:
        "logs/data/real_pools.log",
    benchmark:
        "benchmarks/data/real_pools.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/data_real_pools.py"


rule test_sets:
    input:
        pool="results/data/real/test_pool.json",
        lexicon="results/data/real/test_lexicon.csv",
    output:
        sets=expand("results/data/testsets/testset{testset}.json", testset=TEST_SETS),
        lexicons=expand("results/data/testsets/testset{testset}_lexicon.csv", testset=TEST_SETS),
    params:
        test_sets=config["data"]["test_sets"],
    log:
        "logs/data/test_sets.log",
    benchmark:
        "benchmarks/data/test_sets.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/data_test_sets.py"


rule stamp_pairs:
    input:
        "results/data/real/train_pool.json",
    output:
        train="results/data/stamps/train.npz",
        val="results/data/stamps/val.npz",
    params:
        config=config_for("data"),
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/data/stamp_pairs.log",
    benchmark:
        "benchmarks/data/stamp_pairs.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/data_stamp_pairs.py"


rule surfaces:
    input:
        "results/data/real/train_pool.json",
    output:
        folder=directory("results/data/surfaces"),
    params:
        config=config_for("data"),
        user_files=user_files_fingerprint(config, "surfaces"),
    threads: 2
    log:
        "logs/data/surfaces.log",
    benchmark:
        "benchmarks/data/surfaces.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/data_surfaces.py"


rule data_statistics:
    input:
        train="results/data/real/train_pool.json",
        test="results/data/real/test_pool.json",
        sets=expand("results/data/testsets/testset{testset}.json", testset=TEST_SETS),
    output:
        "results/tables/data_statistics.csv",
    log:
        "logs/data/data_statistics.log",
    benchmark:
        "benchmarks/data/data_statistics.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/data_statistics.py"


rule figure_real_samples:
    input:
        "results/data/real/train_pool.json",
    output:
        report(
            "results/figures/real_samples.png",
            caption="../docs/captions/real_samples.rst",
            category="Data",
        ),
    params:
        seed=config["seed"],
    log:
        "logs/data/figure_real_samples.log",
    benchmark:
        "benchmarks/data/figure_real_samples.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/figure_real_samples.py"


FINAL_TARGETS += ["results/tables/data_statistics.csv", "results/figures/real_samples.png"]
# Stamp pairs and blank surfaces feed the GAN and synthesis only.
if config_rules.uses_synthesis(config):
    FINAL_TARGETS += ["results/data/stamps/train.npz", "results/data/surfaces"]


rule figure_box_masks:
    input:
        train="results/data/stamps/train.npz",
        val="results/data/stamps/val.npz",
    output:
        report(
            "results/figures/box_masks.png",
            caption="../docs/captions/box_masks.rst",
            category="Data",
        ),
    params:
        seed=config["seed"],
    log:
        "logs/data/figure_box_masks.log",
    benchmark:
        "benchmarks/data/figure_box_masks.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/figure_box_masks.py"


if config_rules.uses_synthesis(config):
    FINAL_TARGETS += ["results/figures/box_masks.png"]
