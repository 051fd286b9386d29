# Synthesis (Figure 5): heuristic glyph masks -> stamps rendered per GAN checkpoint (or by the
# classic shaded height field) -> embedded into blank billet surfaces -> the synthetic COCO pool.
# Stamp banks: results/synth/gan/stamps_step{ckpt}.npz (one per synth.checkpoints entry) and
# results/synth/classic/stamps_classic.npz (the classic renderer has no checkpoint: one bank of
# the same stamps). The study mixes in results/synth/{synth.method}/pool.json, and the classic or
# GAN pool where a row of experiments.sets names it (synthetic_source). The stamps and the
# pool synthesise the real train pool's categories (names, ids), so they read it.


rule synth_stamps_gan:
    input:
        generator="results/gan/generator_step{ckpt}.msgpack",
        real="results/data/real/train_pool.json",
        glyphs=synth_glyph_inputs,
    output:
        "results/synth/gan/stamps_step{ckpt}.npz",
    params:
        config=config_for("synth"),
        stamp=synth_stamp_geometry(),
    threads: 2
    resources:
        gpu=JAX_GPUS,
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/synth/stamps_gan_step{ckpt}.log",
    benchmark:
        "benchmarks/synth/stamps_gan_step{ckpt}.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/synth_stamps.py"


rule synth_stamps_classic:
    input:
        real="results/data/real/train_pool.json",
        glyphs=synth_glyph_inputs,
    output:
        "results/synth/classic/stamps_classic.npz",
    params:
        config=config_for("synth"),
        stamp=synth_stamp_geometry(),
    threads: 2
    log:
        "logs/synth/stamps_classic.log",
    benchmark:
        "benchmarks/synth/stamps_classic.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/synth_stamps.py"


rule synth_pool:
    input:
        stamps=synth_stamp_banks,
        surfaces="results/data/surfaces",
        real="results/data/real/train_pool.json",
    output:
        json="results/synth/{method}/pool.json",
        images=directory("results/synth/{method}/images"),
    params:
        config=config_for("synth"),
    threads: 2
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/synth/pool_{method}.log",
    benchmark:
        "benchmarks/synth/pool_{method}.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/synth_pool.py"


rule synth_figure_samples:
    input:
        synthetic_pool(),
    output:
        report(
            "results/figures/synthetic_samples.png",
            caption="../docs/captions/synthetic_samples.rst",
            category="Synthesis",
        ),
    params:
        seed=config["seed"],
    log:
        "logs/synth/figure_samples.log",
    benchmark:
        "benchmarks/synth/figure_samples.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/synth_figure_samples.py"


rule synth_figure_stamps_gan:
    input:
        "results/synth/gan/stamps_step{ckpt}.npz",
    output:
        report(
            "results/figures/gan_stamps_step{ckpt}.png",
            caption="../docs/captions/gan_stamps.rst",
            category="Synthesis",
        ),
    log:
        "logs/synth/figure_stamps_gan_step{ckpt}.log",
    benchmark:
        "benchmarks/synth/figure_stamps_gan_step{ckpt}.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/synth_figure_stamps.py"


rule synth_figure_stamps_classic:
    input:
        "results/synth/classic/stamps_classic.npz",
    output:
        report(
            "results/figures/classic_stamps.png",
            caption="../docs/captions/classic_stamps.rst",
            category="Synthesis",
        ),
    log:
        "logs/synth/figure_stamps_classic.log",
    benchmark:
        "benchmarks/synth/figure_stamps_classic.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/synth_figure_stamps.py"


# A study without synthetic images (every experiment 0 %) synthesises nothing, and then needs no
# glyph for its categories.
if config_rules.uses_synthesis(config):
    FINAL_TARGETS += [
        *(synthetic_pool(source) for source in SYNTHETIC_SOURCES),
        "results/figures/synthetic_samples.png",
        "results/figures/classic_stamps.png",
    ]
    if "gan" in SYNTHETIC_SOURCES:
        FINAL_TARGETS += expand("results/figures/gan_stamps_step{ckpt}.png", ckpt=config["synth"]["checkpoints"])
