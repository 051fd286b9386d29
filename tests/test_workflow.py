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
    result = snakemake("-n", "--forceall", "--quiet", "rules", *args)
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
