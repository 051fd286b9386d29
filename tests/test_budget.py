"""The training-budget comparison (billetjax.evaluation.budget) on two hand-made studies, and the
budget presets as the workflow plans them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from billetjax.evaluation.budget import budget_table, training_progress

ROOT = Path(__file__).resolve().parents[1]


def fake_study(folder: Path, steps: int, maps: list[float], equivalent: float, second_mix: bool = True) -> Path:
    """A finished study's files as far as the comparison reads them: two detectors' histories
    (validation mAP at quarter steps) and an exchange rate of one mix on test set 1."""
    for run in ("exp1/seed0", "exp4/seed0"):
        path = folder / "results/detector" / run
        path.mkdir(parents=True)
        quarter = steps // 4
        pd.DataFrame({"step": [quarter * k for k in range(1, 5)], "val_map50": maps}).to_csv(path / "history.csv")
    (folder / "results/tables").mkdir(parents=True)
    rows = [{"experiment": 4, "test_set": 1, "metric": "TP", "real_images": 100, "synthetic_images": 300,
             "real_equivalent": equivalent, "lo": equivalent - 20, "hi": equivalent + 20, "covers": "billets and seeds"}]
    if second_mix:
        rows.append({"experiment": 2, "test_set": 1, "metric": "TP", "real_images": 300, "synthetic_images": 100,
                     "real_equivalent": 350.0, "lo": 300, "hi": 400, "covers": "billets and seeds"})
    pd.DataFrame(rows).to_csv(folder / "results/tables/exchange_rate.csv", index=False)
    return folder


def test_budgets_side_by_side(tmp_path):
    """800 steps, still climbing (0.80 at half, 0.90 at the end: +0.10); 1600 steps, levelled off
    (0.94 at half, 0.95 at the end: +0.01). Only the mix both studies share is compared."""
    short = fake_study(tmp_path / "a", 800, [0.6, 0.8, 0.85, 0.9], 150.0)
    long = fake_study(tmp_path / "b", 1600, [0.9, 0.94, 0.95, 0.95], 210.0, second_mix=False)
    assert training_progress(short) == (800, pytest.approx(0.9), pytest.approx(0.1))
    assert training_progress(long) == (1600, pytest.approx(0.95), pytest.approx(0.01))
    table = budget_table([long, short], "TP")
    assert table["steps"].tolist() == [800, 1600]
    assert table["real_equivalent"].tolist() == [150.0, 210.0]
    assert set(table["synthetic_images"]) == {300}


def test_budget_presets_plan_the_curve_and_one_mix(run_snakemake, tmp_path, job_counts):
    from billetjax.config import load_config

    for factor in (2, 4):
        preset = ROOT / f"presets/budget-{factor}x.yaml"
        config = load_config(preset)
        assert config["detector"]["steps"] == factor * load_config()["detector"]["steps"]
        result = run_snakemake(tmp_path / f"plan{factor}", "--configfile", str(preset), "-n", "--quiet", "rules")
        assert result.returncode == 0, result.stderr[-3000:]
        jobs = job_counts(result.stdout + result.stderr)
        assert jobs["detector_train"] == 5 * 3 and jobs["exchange_rate"] == 1
