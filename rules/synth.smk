# Synthesis (Figure 5): heuristic glyph masks -> stamps rendered per GAN checkpoint (or by the
# classic shaded height field) -> embedded into blank billet surfaces -> the synthetic COCO pool.
# Each synthesis fit ({fit}, rules/common.smk) has its own stamp banks:
# results/synth/gan/fit{fit}/stamps_step{ckpt}.npz (one per synth.checkpoints entry, from that fit's
# GAN) and results/synth/classic/fit{fit}/stamps_classic.npz (the classic renderer has no
# checkpoint: one bank of the same stamps), and its own pool results/synth/{method}/fit{fit}/pool.json.
# The detectors of seed s mix in the pool of s's fit (synth.method's, or the classic or GAN pool
# where a row names it: synthetic_source). The stamps and the pool synthesise the real train
# pool's categories (names, ids), so they read it. Figures show the first fit.


rule synth_stamps_gan:
    input:
        generator="results/gan/fit{fit}/generator_step{ckpt}.msgpack",
        real="results/data/real/train_pool.json",
        glyphs=synth_glyph_inputs,
    output:
        "results/synth/gan/fit{fit}/stamps_step{ckpt}.npz",
    params:
        config=lambda wildcards: fit_config(wildcards, "synth"),
        stamp=synth_stamp_geometry(),
    threads: 2
    resources:
        gpu=JAX_GPUS,
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/synth/stamps_gan_fit{fit}_step{ckpt}.log",
    benchmark:
        "benchmarks/synth/stamps_gan_fit{fit}_step{ckpt}.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/synth_stamps.py"


rule synth_stamps_classic:
    input:
        real="results/data/real/train_pool.json",
        glyphs=synth_glyph_inputs,
    output:
        "results/synth/classic/fit{fit}/stamps_classic.npz",
    params:
        config=lambda wildcards: fit_config(wildcards, "synth"),
        stamp=synth_stamp_geometry(),
    threads: 2
    log:
        "logs/synth/stamps_classic_fit{fit}.log",
    benchmark:
        "benchmarks/synth/stamps_classic_fit{fit}.tsv"
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
        json="results/synth/{method}/fit{fit}/pool.json",
        images=directory("results/synth/{method}/fit{fit}/images"),
    params:
        config=lambda wildcards: fit_config(wildcards, "synth"),
    threads: 2
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/synth/pool_{method}_fit{fit}.log",
    benchmark:
        "benchmarks/synth/pool_{method}_fit{fit}.tsv"
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
        f"results/synth/gan/fit{FIRST_FIT}/stamps_step{{ckpt}}.npz",
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
        f"results/synth/classic/fit{FIRST_FIT}/stamps_classic.npz",
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
        *(synthetic_pool(source, fit) for source in SYNTHETIC_SOURCES for fit in FITS),
        "results/figures/synthetic_samples.png",
        "results/figures/classic_stamps.png",
    ]
    if "gan" in SYNTHETIC_SOURCES:
        FINAL_TARGETS += expand("results/figures/gan_stamps_step{ckpt}.png", ckpt=config["synth"]["checkpoints"])
