"""The training-budget comparison (billetjax.evaluation.budget) on two hand-made studies, and the
budget presets as the workflow plans them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from billetjax import coco as cc
from billetjax import compare_budgets
from billetjax.config import load_config
from billetjax.evaluation.budget import Study, budget_table, shared_rows, training_progress

ROOT = Path(__file__).resolve().parents[1]


EVALUATION_OVERLAY = {"bootstrap_samples": 300, "id_pattern": None}


def study_overlay(steps: int, extra_rows: list[dict] = ()) -> dict:
    """The budget presets' design (400 real, 100 real, 100 real + 300 synthetic) at `steps`, two seeds."""
    sets = [{"synthetic_pct": 0}, {"synthetic_pct": 0, "images_fraction": 0.25}, {"synthetic_pct": 75}, *extra_rows]
    return {"experiments": {"sets": sets, "seeds": [0, 1]}, "detector": {"steps": steps},
            "evaluation": EVALUATION_OVERLAY}


def study_config(steps: int, extra_rows: list[dict] = ()) -> dict:
    return load_config(study_overlay(steps, extra_rows))


def fake_study(folder: Path, config: dict, detections: dict[int, list[dict]], gt_path: str, maps: list[float]) -> Study:
    """A finished study's files as far as the comparison reads them: every detector's history
    (validation mAP at quarter steps) and its metrics on test set 1."""
    from billetjax.evaluation.evaluate import evaluate_files

    steps = int(config["detector"]["steps"])
    for experiment, dets in detections.items():
        for seed in config["experiments"]["seeds"]:
            run = folder / "results/detector" / f"exp{experiment}/seed{seed}"
            run.mkdir(parents=True)
            pd.DataFrame({"step": [steps // 4 * k for k in range(1, 5)], "val_map50": maps}).to_csv(run / "history.csv")
            det_path = folder / f"det{experiment}_{seed}.json"
            det_path.write_text(json.dumps(dets))
            evaluate_files(gt_path, det_path, folder / f"results/metrics/exp{experiment}/seed{seed}/testset1.json",
                           config["evaluation"], int(config["seed"]), experiment, seed, 1)
    return Study(folder, config)


def test_budgets_side_by_side(tmp_path, write_evaluation_test_set, controlled_detections):
    """800 steps, still climbing (0.80 at half, 0.90 at the end: +0.10), where the mix reads like
    its 100 real images alone; 1600 steps, levelled off (+0.01), where it reads like the 400 real
    images. Each is priced on the curve through 100 and 400 real images; the longer study's extra
    rows (200 real, and 200 real + 200 synthetic) are not shared and left out."""
    gt_path = write_evaluation_test_set(tmp_path)
    coco = cc.load(gt_path)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.95}
               for a in coco["annotations"]]
    flawed = controlled_detections(coco)
    short = fake_study(tmp_path / "a", study_config(800), {1: perfect, 2: flawed, 3: flawed}, gt_path,
                       [0.6, 0.8, 0.85, 0.9])
    extra = [{"synthetic_pct": 0, "images_fraction": 0.5}, {"synthetic_pct": 50, "images_fraction": 1.0}]
    long = fake_study(tmp_path / "b", study_config(1600, extra), {1: perfect, 2: flawed, 3: perfect, 4: flawed,
                                                                  5: flawed}, gt_path, [0.9, 0.94, 0.95, 0.95])
    assert training_progress(short.folder) == (800, pytest.approx(0.9), pytest.approx(0.1))
    assert training_progress(long.folder, [1, 2, 3]) == (1600, pytest.approx(0.95), pytest.approx(0.01))
    assert shared_rows([long, short]) == [(100, 0), (400, 0), (100, 300)]
    table = budget_table([long, short], "TP")
    assert table["steps"].tolist() == [800, 1600]
    assert table["real_equivalent"].tolist() == pytest.approx([100.0, 400.0])
    assert set(table["synthetic_images"]) == {300} and set(table["curve_real_images"]) == {"100 400"}
    assert table["slope_per_doubling"].tolist() == pytest.approx([7.5, 7.5])  # 15 points over two doublings
    assert table["value"].tolist() == pytest.approx([85.0, 100.0])
    # The command line: DIR=CONFIG, the config laid over config.yaml as --configfile does.
    for study, overlay in ((short, study_overlay(800)), (long, study_overlay(1600, extra))):
        (study.folder / "study.yaml").write_text(yaml.safe_dump(overlay))
    out = tmp_path / "budgets.csv"
    assert compare_budgets.main([f"{long.folder}={long.folder / 'study.yaml'}",
                                 f"{short.folder}={short.folder / 'study.yaml'}", "--out", str(out)]) == 0
    assert pd.read_csv(out)["real_equivalent"].tolist() == pytest.approx([100.0, 400.0])
    assert compare_budgets.main([str(long.folder), str(short.folder)]) == 1  # config.yaml's rows: not these studies


def test_budget_refusals(tmp_path):
    one_curve_row = Study(tmp_path, study_config(800, []))
    other = Study(tmp_path, load_config({"experiments": {"sets": [{"synthetic_pct": 0}, {"synthetic_pct": 75}]},
                                         "evaluation": EVALUATION_OVERLAY}))
    with pytest.raises(ValueError, match="two real-only rows and one mix"):
        shared_rows([one_curve_row, other])
    with pytest.raises(FileNotFoundError, match="no results/metrics"):
        budget_table([one_curve_row, one_curve_row], "TP")
    with pytest.raises(FileNotFoundError, match="is it a finished study"):
        training_progress(tmp_path)


def test_budget_presets_plan_the_curve_and_one_mix(run_snakemake, tmp_path, job_counts):
    for factor in (2, 4):
        preset = ROOT / f"presets/budget-{factor}x.yaml"
        config = load_config(preset)
        assert config["detector"]["steps"] == factor * load_config()["detector"]["steps"]
        result = run_snakemake(tmp_path / f"plan{factor}", "--configfile", str(preset), "-n", "--quiet", "rules")
        assert result.returncode == 0, result.stderr[-3000:]
        jobs = job_counts(result.stdout + result.stderr)
        assert jobs["detector_train"] == 3 * 3 and jobs["exchange_rate"] == 1
