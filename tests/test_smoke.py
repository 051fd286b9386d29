"""The whole study end to end at toy size (tests/presets/smoke.yaml), as `make run` runs it.

Checks that every table and figure comes out well formed, and that the same config
run twice gives identical tables (determinism on the CPU).
"""

import pandas as pd
import pytest

COLUMNS = ["experiment", "synthetic_pct", "real_pct", "n_images", "test_set", "TP", "MC", "FN", "FP", "CB"]
FIGURES = ["real_samples.png", "synthetic_samples.png", "gan_losses.png", "gan_samples_step10.png",
           "gan_samples_step20.png", "table3.png", "training_curves.png", "detections_gallery.png"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(smoke_study):
    return smoke_study


def test_tables_are_well_formed(study):
    tables = study / "results/tables"
    for k in range(1, 6):
        table = pd.read_csv(tables / f"testset{k}.csv")
        assert list(table.columns[: len(COLUMNS)]) == COLUMNS
        assert table["experiment"].tolist() == [1, 2, 3, 4, 5, 6]
        assert table["synthetic_pct"].tolist() == [0, 25, 50, 75, 100, 0]
        assert table["n_images"].tolist() == [24] * 5 + [6]
        assert (table["test_set"] == k).all()
        metrics = table[["TP", "MC", "FN", "FP", "CB"]]
        assert metrics.notna().all().all() and (metrics >= 0).all().all()
        assert ((table["TP"] + table["FN"]) - 100).abs().max() < 1e-6
    table3 = pd.read_csv(tables / "table3.csv")
    assert len(table3) == 30
    assert table3["test_set"].tolist() == sorted(table3["test_set"].tolist())
    stats = pd.read_csv(tables / "data_statistics.csv")
    assert {"train_pool", "test_pool", "testset1"} <= set(stats["dataset"])


def test_figures_exist_and_are_pngs(study):
    for name in FIGURES:
        path = study / "results/figures" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert path.stat().st_size > 10_000, name


def test_every_job_logged_and_timed(study):
    logs = list((study / "logs").rglob("*.log"))
    benchmarks = list((study / "benchmarks").rglob("*.tsv"))
    assert len(logs) >= 90 and len(benchmarks) == len(logs)
    train_log = (study / "logs/detector/train_exp1_seed0.log").read_text()
    assert "steps/s" in train_log and "anchor sizes" in train_log


def test_same_config_same_tables(study, tmp_path, run_snakemake, smoke_preset):
    again = tmp_path / "again"
    result = run_snakemake(again, "--configfile", str(smoke_preset), "--cores", "2", "--resources", "gpu=1", "--retries", "0")
    assert result.returncode == 0, result.stderr[-8000:]
    for k in range(1, 6):
        first = (study / f"results/tables/testset{k}.csv").read_bytes()
        assert (again / f"results/tables/testset{k}.csv").read_bytes() == first, f"testset{k}.csv differs"
