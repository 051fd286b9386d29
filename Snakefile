# billetjax: how much GAN-made synthetic training data can replace real data (Faltings et al. 2022).
# The stages, one file each under rules/: data -> gan -> synth -> experiments -> detector ->
# evaluate -> report; then, where read.images is set, reading new frames (rules/read.smk).
# Run `snakemake --cores 8 --resources gpu=1`; see README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: f"{workflow.basedir}/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/gan.smk"
include: "rules/synth.smk"
include: "rules/experiments.smk"
include: "rules/detector.smk"
include: "rules/evaluate.smk"
include: "rules/read.smk"


rule all:
    default_target: True
    input:
        FINAL_TARGETS,
