"""The workflow as users run it: config validation, planned jobs (dry runs), and the smoke run."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--directory", str(ROOT), "--snakefile", str(ROOT / "Snakefile")]


def snakemake(*args, cwd=ROOT, timeout=600):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def planned_jobs(*args) -> dict[str, int]:
    """Jobs per rule of a dry run (Snakemake's 'Job stats' table), as if on a clean checkout."""
    result = snakemake(*args, "-n", "--forceall", "--quiet", "rules")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = {}
    for line in (result.stdout + result.stderr).splitlines():
        m = re.fullmatch(r"\s*([a-z_0-9]+)\s+(\d+)\s*", line)
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "setting, key",
    [("image_size_px=10", "image_size_px"), ("seed=-1", "seed")],
)
def test_out_of_range_config_is_refused(setting, key):
    result = snakemake("-n", "--config", setting)
    assert result.returncode != 0
    assert "validat" in (result.stdout + result.stderr).lower() and key in result.stdout + result.stderr


def test_default_plan_has_the_data_stage():
    jobs = planned_jobs()
    assert jobs["real_pools"] == 1 and jobs["test_sets"] == 1 and jobs["stamp_pairs"] == 1


def test_paper_preset_plans_the_papers_jobs():
    jobs = planned_jobs("--configfile", str(ROOT / "presets/paper.yaml"))
    assert jobs["detector_train"] == 6  # Table 1
    assert jobs["gan_samples"] == 8 and jobs["synth_stamps_gan"] == 8  # 40,000 steps, every 5,000
    assert jobs["evaluate_detections"] == 30  # 6 experiments x 5 test sets
    assert jobs["table_testset"] == 5 and jobs["table3"] == 1


def test_one_table_builds_only_what_it_needs():
    jobs = planned_jobs("results/tables/testset3.csv")
    assert jobs["evaluate_detections"] == 6 and jobs["detector_predict"] == 6
    assert jobs["table_testset"] == 1 and "table3" not in jobs and "figure_table3" not in jobs
    assert "gan_samples" not in jobs  # figures of other stages are not needed for a table


def test_an_added_experiment_row_is_trained_and_evaluated(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "experiments:\n  sets:\n"
        + "".join(f"    - {{synthetic_pct: {p}}}\n" for p in (0, 25, 50, 75, 90, 100))
        + "    - {synthetic_pct: 0, images_fraction: 0.25}\n"
    )
    jobs = planned_jobs("--configfile", str(extra))
    assert jobs["detector_train"] == 7 and jobs["evaluate_detections"] == 35
