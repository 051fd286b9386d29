# GAN: pix2pix trained on the stamp pairs (paper §2.2.2), once per synthesis fit ({fit}: one per
# detector seed with synth.per_seed, rules/common.smk), one generator file per checkpoint
# ({ckpt} = gan.checkpoint_every, 2 * gan.checkpoint_every, ... <= gan.steps), Figure 4's sample
# grids per checkpoint and the loss curves (of the first fit). The resumable orbax state lives in
# results/gan/fit{fit}/state/, which is not an output: a killed or failed training resumes from its
# last checkpoint on retry.


rule gan_train:
    input:
        train="results/data/stamps/train.npz",
        val="results/data/stamps/val.npz",
    output:
        history="results/gan/fit{fit}/history.csv",
        generators=expand("results/gan/fit{{fit}}/generator_step{ckpt}.msgpack", ckpt=gan_checkpoints()),
    params:
        config=lambda wildcards: fit_config(wildcards, "gan"),
        state_dir=lambda wildcards: f"results/gan/fit{wildcards.fit}/state",
    # One thread, as the detector's trainings: at the default sizes pix2pix's step runs as fast
    # with XLA's one-thread flag as without (XLA still overlaps independent operations), and the
    # training beside it keeps most of its core (billetjax.runtime.limit_cpu_threads);
    # `--set-threads gan_train=N` gives more.
    threads: 1
    resources:
        gpu=JAX_GPUS,
    priority: CRITICAL_PATH_PRIORITY
    log:
        "logs/gan/train_fit{fit}.log",
    benchmark:
        "benchmarks/gan/train_fit{fit}.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/gan_train.py"


rule gan_samples:
    input:
        generator=f"results/gan/fit{FIRST_FIT}/generator_step{{ckpt}}.msgpack",
        val="results/data/stamps/val.npz",
    output:
        report(
            "results/figures/gan_samples_step{ckpt}.png",
            caption="../docs/captions/gan_samples.rst",
            category="GAN",
            subcategory="samples",
        ),
    params:
        seed=config["seed"],
    resources:
        gpu=JAX_GPUS,
    log:
        "logs/gan/samples_step{ckpt}.log",
    benchmark:
        "benchmarks/gan/samples_step{ckpt}.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/gan_samples.py"


rule gan_losses:
    input:
        f"results/gan/fit{FIRST_FIT}/history.csv",
    output:
        report(
            "results/figures/gan_losses.png",
            caption="../docs/captions/gan_losses.rst",
            category="GAN",
        ),
    log:
        "logs/gan/losses.log",
    benchmark:
        "benchmarks/gan/losses.tsv"
    conda:
        "../envs/plot.yaml"
    script:
        "../scripts/gan_losses.py"


# The GAN trains when some experiment mixes its stamps in: not for a study without synthetic
# images (every experiment 0 %), nor for one whose synthetic rows all use the classic renderer.
if "gan" in SYNTHETIC_SOURCES:
    FINAL_TARGETS += expand("results/figures/gan_samples_step{ckpt}.png", ckpt=gan_checkpoints())
    FINAL_TARGETS += ["results/figures/gan_losses.png"]
