"""Tables and figures end to end on a test set whose detections carry known, controlled errors
(the test set and its detections: `write_evaluation_test_set`, `controlled_detections` in conftest)."""

import copy
import json

import numpy as np
import pandas as pd
import pytest

from billetjax import coco as cc
from billetjax.evaluation.evaluate import evaluate_files, load_metrics
from billetjax.evaluation.figures import detections_gallery, table3_figure, training_curves_figure
from billetjax.evaluation.tables import write_table3, write_testset_table

EXPERIMENTS = {"images": 40, "sets": [{"synthetic_pct": 25, "images_fraction": 1.0},
                                      {"synthetic_pct": 0, "images_fraction": 0.25}]}
EVALUATION = {"iou_threshold": 0.5, "score_threshold": 0.5, "bootstrap_samples": 200,
              "id_pattern": {"length": 10, "alphabet": "0123456789"},
              "id_reading": {"min_confidence": 0.3, "min_score": 0.5, "miss_probability": 0.05, "misread_levels_pct": [0.1, 5.0]}}


@pytest.fixture(scope="module")
def study(tmp_path_factory, write_evaluation_test_set, controlled_detections, table1_of):
    folder = tmp_path_factory.mktemp("evaluation")
    gt_path = write_evaluation_test_set(folder)
    coco = cc.load(gt_path)
    runs = {1: controlled_detections(coco),
            2: [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.95}
                for a in coco["annotations"]]}
    metrics = []
    for experiment, dets in runs.items():
        for seed in (0, 1):
            det_path = folder / f"exp{experiment}" / f"seed{seed}" / "testset3.json"
            det_path.parent.mkdir(parents=True)
            det_path.write_text(json.dumps(dets))
            out = folder / "metrics" / f"exp{experiment}" / f"seed{seed}" / "testset3.json"
            evaluate_files(gt_path, det_path, out, EVALUATION, 2022, experiment, seed, 3)
            metrics.append(out)
    table = write_testset_table(metrics, folder / "tables" / "testset3.csv", table1_of(EXPERIMENTS), 3, 200, 2022)
    return {"folder": folder, "gt": gt_path, "metrics": metrics, "table": table}


def test_metrics_file(study):
    run = load_metrics(study["metrics"][0])
    assert run["counts"] == {"n_images": 20, "n_billets": 20, "n_characters": 200, "n_detections": 185,
                             "n_billet_ids": 20, "TP_n": 170, "MC_n": 10, "FN_n": 30, "FP_n": 5, "CB_n": 5}
    lo, hi = run["intervals"]["TP"]
    assert lo < 85.0 < hi
    assert (run["experiment"], run["seed"], run["test_set"]) == (1, 0, 3)
    assert len(run["per_image"]["counts"]) == 20


def test_testset_table_exact(study):
    table = pd.read_csv(study["folder"] / "tables" / "testset3.csv")
    assert list(table.columns[:10]) == ["experiment", "synthetic_pct", "real_pct", "n_images", "test_set",
                                        "TP", "MC", "FN", "FP", "CB"]
    first, second = table.iloc[0], table.iloc[1]
    assert (first.experiment, first.synthetic_pct, first.real_pct, first.n_images, first.test_set) == (1, 25, 75, 40, 3)
    assert (second.experiment, second.synthetic_pct, second.real_pct, second.n_images) == (2, 0, 100, 10)
    expected = {"TP": 85.0, "MC": 5.0, "FN": 15.0, "FP": 2.5, "CB": 25.0, "id_read_rate": 25.0,
                "id_read_rate_pattern": 25.0}
    for key, value in expected.items():
        assert first[key] == pytest.approx(value, abs=1e-4), key
        assert first[f"{key}_lo"] <= value <= first[f"{key}_hi"], key
    for key, value in {"TP": 100, "MC": 0, "FN": 0, "FP": 0, "CB": 100, "mAP50": 1.0, "id_read_rate": 100}.items():
        assert second[key] == pytest.approx(value, abs=1e-4), key
    assert 0.5 < first["mAP50"] < 1.0
    # Two identical seeds: no spread.
    assert first["n_seeds"] == 2 and first["TP_seed_sd"] == 0 and first["TP_seed_lo"] == pytest.approx(85.0)
    assert first["interval_covers"] == "billets and seeds"  # two seeds: both parts of the variance
    assert first["n_characters"] == 200 and first["n_billets"] == 20


def test_table3_order(study):
    folder = study["folder"]
    other = study["table"].assign(test_set=1)
    other.to_csv(folder / "tables" / "testset1.csv", index=False)
    table = write_table3([folder / "tables" / "testset3.csv", folder / "tables" / "testset1.csv"],
                         folder / "tables" / "table3.csv")
    assert list(zip(table.test_set, table.experiment)) == [(1, 1), (1, 2), (3, 1), (3, 2)]


def test_unknown_experiment_is_refused(study, table1_of):
    with pytest.raises(ValueError, match="no metrics for experiment 2"):
        write_testset_table(study["metrics"][:2], study["folder"] / "x.csv", table1_of(EXPERIMENTS), 3, 10, 0)
    with pytest.raises(ValueError, match="test set 4"):
        write_testset_table(study["metrics"], study["folder"] / "x.csv", table1_of(EXPERIMENTS), 4, 10, 0)


def assert_png(path, min_px=300):
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert min(pixels.shape[:2]) >= min_px and pixels.std() > 0.01


def test_figures(study):
    folder = study["folder"]
    rows = pd.concat([study["table"], study["table"].assign(test_set=5)])
    rows.to_csv(folder / "t3.csv", index=False)
    table3_figure(folder / "t3.csv", folder / "figures" / "table3.png")
    assert_png(folder / "figures" / "table3.png")

    histories = {}
    for experiment in (1, 2):
        for seed in (0, 1):
            steps = np.arange(0, 101, 10)
            history = pd.DataFrame({"step": steps, "loss": 2.0 * np.exp(-steps / 50) + 0.1 * experiment + 0.01 * seed})
            history["val_loss"] = np.where(steps % 50 == 0, history["loss"] * 1.1, np.nan)
            history["val_map50"] = np.where(steps % 50 == 0, steps / 120, np.nan)
            path = folder / f"history_{experiment}_{seed}.csv"
            history.to_csv(path, index=False)
            histories[(experiment, seed)] = path
    training_curves_figure(histories, folder / "figures" / "training_curves.png")
    assert_png(folder / "figures" / "training_curves.png")

    det_path = folder / "exp1" / "seed0" / "testset3.json"
    detections_gallery(study["gt"], det_path, folder / "figures" / "gallery.png",
                       iou_threshold=EVALUATION["iou_threshold"], score_threshold=EVALUATION["score_threshold"],
                       n_billets=3, title="test")
    assert_png(folder / "figures" / "gallery.png")


# ------------------------------------------------------------------ category ids other than 1..10

# New category id of the digit whose id is `old` (= digit + 1) in the written test set.
RENUMBERINGS = {
    "from 0": lambda old: old - 1,  # Label Studio
    "20 to 29": lambda old: old + 19,
    "20 to 29 shuffled": lambda old: 20 + (7 * old) % 10,  # "0" -> 27, "1" -> 24, ... "9" -> 20
}


def renumbered(coco: dict, new_id) -> dict:
    """The same test set with every category id replaced by `new_id(old)` (names unchanged)."""
    out = copy.deepcopy(coco)
    for category in out["categories"]:
        category["id"] = new_id(category["id"])
    for ann in out["annotations"]:
        ann["category_id"] = new_id(ann["category_id"])
    return out


def with_class_scores(coco: dict, detections: list[dict]) -> list[dict]:
    """Detections with `class_scores` as the detector writes them (one per category, ascending id):
    0.9 for the detection's own label, 0.1 for the next digit."""
    ids = sorted(c["id"] for c in coco["categories"])
    name_of = {c["id"]: c["name"] for c in coco["categories"]}
    by_name = {c["name"]: c["id"] for c in coco["categories"]}
    out = []
    for det in detections:
        scores = [0.0] * len(ids)
        scores[ids.index(det["category_id"])] = 0.9
        scores[ids.index(by_name[str((int(name_of[det["category_id"]]) + 1) % 10)])] = 0.1
        out.append({**det, "class_scores": scores})
    return out


@pytest.mark.parametrize("renumbering", list(RENUMBERINGS))
def test_category_ids_other_than_1_to_10(tmp_path, write_evaluation_test_set, controlled_detections, renumbering):
    """Metrics, billet IDs and mAP (pycocotools) do not depend on how the categories are numbered:
    a set with ids 0..9 or 20..29 (also out of name order) gives the hand-counted values and
    exactly what the same set with ids 1..10 gives."""
    base_path = write_evaluation_test_set(tmp_path)
    base = cc.load(base_path)
    other = renumbered(base, RENUMBERINGS[renumbering])
    assert sorted(c["id"] for c in other["categories"]) != list(range(1, 11))
    other_path = tmp_path / "renumbered.json"
    cc.save(other_path, other)

    results = {}
    for name, coco, path in (("1..10", base, base_path), (renumbering, other, other_path)):
        dets_path = tmp_path / f"detections_{len(results)}.json"
        dets_path.write_text(json.dumps(with_class_scores(coco, controlled_detections(coco))))
        results[name] = evaluate_files(path, dets_path, tmp_path / f"metrics_{len(results)}.json",
                                       EVALUATION, 2022, 1, 0, 3)
    first, second = results.values()
    hand = {"TP": 85.0, "MC": 5.0, "FN": 15.0, "FP": 2.5, "CB": 25.0, "id_read_rate": 25.0,
            "id_read_rate_pattern": 25.0}
    for result in (first, second):
        assert {k: result["metrics"][k] for k in hand} == pytest.approx(hand)
        assert (result["counts"]["TP_n"], result["counts"]["MC_n"], result["counts"]["FP_n"]) == (170, 10, 5)
    assert second["metrics"]["mAP50"] == pytest.approx(first["metrics"]["mAP50"], abs=1e-12)
    assert 0.5 < second["metrics"]["mAP50"] < 1.0
    assert second["per_image"] == first["per_image"]
    assert second["billet_ids"] == first["billet_ids"]
    assert second["intervals"].keys() == first["intervals"].keys()
    for key, interval in first["intervals"].items():  # NaN where a decoder is absent (no lexicon here)
        np.testing.assert_array_equal(second["intervals"][key], interval, err_msg=key)
