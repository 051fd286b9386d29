# Detector: a Faster R-CNN trained per experiment x seed (Table 1), then run on all test sets of
# Table 2 at once. The resumable orbax state lives in state/ beside the outputs and is not an
# output, so a killed or failed training resumes on retry instead of starting over.


rule detector_train:
    input:
        train="results/experiments/exp{experiment}/seed{seed}/train.json",
        val="results/experiments/exp{experiment}/seed{seed}/val.json",
    output:
        params="results/detector/exp{experiment}/seed{seed}/params.msgpack",
        history="results/detector/exp{experiment}/seed{seed}/history.csv",
    params:
        config=config_for("detector"),
        state_dir="results/detector/exp{experiment}/seed{seed}/state",
    # One thread: on a CPU, trainings side by side use the cores better than one training on all
    # of them (billetjax.runtime.limit_cpu_threads); `--set-threads detector_train=N` gives more.
    threads: 1
    resources:
        gpu=JAX_GPUS,
    log:
        "logs/detector/train_exp{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/detector/train_exp{experiment}_seed{seed}.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/detector_train.py"


rule detector_predict:
    # One job per trained detector writes its detections on every test set: one start-up and one
    # compilation, and each distinct test image run once (the test sets are filters of one pool).
    input:
        params="results/detector/exp{experiment}/seed{seed}/params.msgpack",
        testsets=expand("results/data/testsets/testset{testset}.json", testset=TEST_SETS),
    output:
        expand("results/detections/exp{{experiment}}/seed{{seed}}/testset{testset}.json", testset=TEST_SETS),
    threads: 1
    resources:
        gpu=JAX_GPUS,
    log:
        "logs/detector/predict_exp{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/detector/predict_exp{experiment}_seed{seed}.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/detector_predict.py"
