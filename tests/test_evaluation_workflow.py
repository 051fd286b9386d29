"""The evaluation rules through Snakemake, in a throwaway workflow that includes only
rules/common.smk and rules/evaluate.smk, on existing test sets and controlled-error detections."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from billetjax import coco as cc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, write_evaluation_test_set, controlled_detections):
    folder = tmp_path_factory.mktemp("evaluate_workflow")
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["experiments"].update(images=40, seeds=[0], sets=[{"synthetic_pct": 25}, {"synthetic_pct": 0, "images_fraction": 0.25}])
    config["evaluation"].update(bootstrap_samples=50, gallery={"experiment": 1, "test_set": 3, "billets": 2},
                                id_pattern={"rows": [5, 5]})  # the test billets: two rows of five digits
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "Snakefile").write_text(
        'configfile: "config.yaml"\n'
        f'include: "{ROOT}/rules/common.smk"\n'
        f'include: "{ROOT}/rules/evaluate.smk"\n'
        "rule all:\n    input: FINAL_TARGETS\n"
    )
    testsets = folder / "results" / "data" / "testsets"
    testsets.mkdir(parents=True)
    gt_path = write_evaluation_test_set(testsets)
    for n in (1, 2, 4, 5):
        (testsets / f"testset{n}.json").write_text(Path(gt_path).read_text())
    coco = cc.load(gt_path)
    # One batch for all billets: every test ID and ten distractors (IDs of no billet).
    ids = [img["billet_id"] for img in coco["images"]]
    lexicon = pd.DataFrame({"billet_id": ids + [f"98765 4321{d}" for d in range(10)]})
    for n in range(1, 6):
        lexicon.to_csv(testsets / f"testset{n}_lexicon.csv", index=False)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in coco["annotations"]]
    for experiment, dets in ((1, controlled_detections(coco)), (2, perfect)):
        for seed in (0,):
            for n in range(1, 6):
                path = folder / f"results/detections/exp{experiment}/seed{seed}/testset{n}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(dets))
            history = pd.DataFrame({"step": [0, 50, 100], "loss": [2.0, 1.0, 0.5],
                                    "val_loss": [np.nan, 1.2, 0.7], "val_map50": [np.nan, 0.4, 0.8]})
            path = folder / f"results/detector/exp{experiment}/seed{seed}/history.csv"
            path.parent.mkdir(parents=True)
            history.to_csv(path, index=False)
    return folder


@pytest.fixture(scope="module")
def snakemake(workflow, run_snakemake):
    """A function: Snakemake on the throwaway workflow with the given arguments; its output."""

    def run(*args):
        result = run_snakemake(workflow, "--cores", "2", *args, snakefile=workflow / "Snakefile", timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    return run


def test_one_table_needs_only_its_test_set(snakemake, job_counts):
    output = snakemake("-n", "results/tables/testset3.csv")
    assert job_counts(output) == {"evaluate_detections": 2, "table_testset": 1}
    assert not re.search(r"testset[1245]\.json", output)


def test_full_plan(snakemake, job_counts):
    assert job_counts(snakemake("-n", "all")) == {
        "all": 1, "evaluate_detections": 10, "table_testset": 5, "table3": 1,
        "figure_table3": 1, "figure_training_curves": 1, "figure_detections_gallery": 1,
        "comparisons": 1, "replacement_curve": 1,  # no domain gap: this workflow has no synthesis stage
        "id_read_curve": 1,
    }


@pytest.mark.slow
def test_everything_through_snakemake(workflow, snakemake):
    snakemake("all")
    table = pd.read_csv(workflow / "results/tables/testset3.csv")
    expected = {"TP": 85.0, "MC": 5.0, "FN": 15.0, "FP": 2.5, "CB": 25.0}
    assert {k: table.iloc[0][k] for k in expected} == pytest.approx(expected)
    assert list(table["n_images"]) == [40, 10] and list(table["n_seeds"]) == [1, 1]
    assert (workflow / "logs/evaluate/exp1/seed0/testset3.log").stat().st_size > 0
    table = pd.read_csv(workflow / "results/tables/table3.csv")
    assert list(zip(table.test_set, table.experiment)) == [(n, e) for n in range(1, 6) for e in (1, 2)]
    assert table["TP"].tolist() == pytest.approx([85.0, 100.0] * 5)
    # Whole IDs (controlled_detections: billets 0-9 miss 2 characters, 10-14 have 2 wrong labels,
    # 15-19 are read perfectly; no class scores, so every reading is as sure as its boxes' scores):
    # the grammar (10 digits) cannot read 0-9 and reads 10-14 wrong; the lexicon reads 0-9 (the
    # missing characters are missed; the distractors contradict 9 of 10 characters) and 15-19,
    # and 10-14 too (two substitutions in a 10-digit ID of its own against an ID sharing none).
    table = pd.read_csv(workflow / "results/tables/testset3.csv")
    first = table.iloc[0]
    assert (first["id_read_rate"], first["id_read_rate_pattern"]) == pytest.approx((25.0, 25.0))
    assert first["id_read_rate_lexicon"] == pytest.approx(100.0)
    assert first["id_read_pattern_at_0.5"] == pytest.approx(0.0)  # its misreads are as sure as its reads
    for v in ("plain", "pattern", "lexicon"):
        assert first[f"id_read_{v}"] + first[f"id_misread_{v}"] + first[f"id_reject_{v}"] == pytest.approx(100.0)
    curve = pd.read_csv(workflow / "results/tables/id_read_curve.csv")
    assert set(curve["variant"]) == {"plain", "pattern", "lexicon"} and set(curve["test_set"]) == {1, 2, 3, 4, 5}
    for name in ("table3", "training_curves", "detections_gallery", "id_read_curve"):
        png = (workflow / f"results/figures/{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
