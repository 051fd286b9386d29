# Reading new frames (after the study): a trained detector exported as a reader that runs with
# JAX and numpy alone (jax.export: StableHLO + weights + JSON), then a folder of frames read with
# it into readings, COCO results and pre-labels for Label Studio and CVAT (docs/reading.md).


rule reader_export:
    input:
        params="results/detector/exp{experiment}/seed{seed}/params.msgpack",
        train="results/experiments/exp{experiment}/seed{seed}/train.json",
    output:
        expand("results/detector/exp{{experiment}}/seed{{seed}}/reader/{name}", name=READER_FILES),
    params:
        config=reader_config(),
    threads: 1
    log:
        "logs/read/reader_export_exp{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/read/reader_export_exp{experiment}_seed{seed}.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/reader_export.py"


rule read_frames:
    input:
        reader=read_reader_files,
        images=read_images,
        lexicon=read_lexicon,
    output:
        expand("results/read/{name}", name=READ_OUTPUTS),
    params:
        read=config["read"],
    threads: 2
    resources:
        gpu=JAX_GPUS,
    log:
        "logs/read/read_frames.log",
    benchmark:
        "benchmarks/read/read_frames.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/read_frames.py"


if config["read"]["images"]:
    FINAL_TARGETS += expand("results/read/{name}", name=READ_OUTPUTS)
