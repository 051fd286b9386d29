# Detector: a Faster R-CNN trained per experiment x seed (Table 1), then run on every test set of
# Table 2. The resumable orbax state lives in state/ beside the outputs and is not an output, so a
# killed or failed training resumes on retry instead of starting over.


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
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/detector/train_exp{experiment}_seed{seed}.log",
    benchmark:
        "benchmarks/detector/train_exp{experiment}_seed{seed}.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/detector_train.py"


rule detector_predict:
    input:
        params="results/detector/exp{experiment}/seed{seed}/params.msgpack",
        testset="results/data/testsets/testset{testset}.json",
    output:
        "results/detections/exp{experiment}/seed{seed}/testset{testset}.json",
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/detector/predict_exp{experiment}_seed{seed}_testset{testset}.log",
    benchmark:
        "benchmarks/detector/predict_exp{experiment}_seed{seed}_testset{testset}.tsv"
    conda:
        "../envs/jax.yaml"
    script:
        "../scripts/detector_predict.py"
