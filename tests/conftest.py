"""Fixtures shared by the test modules.

pytest puts `tests/` on `sys.path` for this file, so the test-support package `tests/support`
(renderers of annotation tools' exports) is importable as `support`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


@pytest.fixture
def make_config():
    """A function: config.yaml merged with overrides, validated with the schema's defaults filled
    in (as the workflow does), e.g. `make_config({"data": {"source": "coco"}})`."""
    from snakemake.utils import validate

    def build(overrides: dict | None = None, base: str | Path = ROOT / "config.yaml") -> dict:
        config = yaml.safe_load(Path(base).read_text()) if base else {}
        _merge(config, overrides or {})
        validate(config, str(ROOT / "schemas/config.schema.yaml"))
        return config

    return build


SNAKEFILE = ROOT / "Snakefile"
SMOKE = ROOT / "tests/presets/smoke.yaml"


def _run_snakemake(workdir: Path, *args: str, timeout: int = 1500):
    """`snakemake` in `workdir` (its results/, logs/ there) with the repository's Snakefile, as a
    user runs it; returns the CompletedProcess (stdout and stderr captured)."""
    import subprocess
    import sys

    Path(workdir).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> Path:
    """The whole study on the smoke preset, run once per session; its working directory.
    Treat it as read-only: a test that changes things copies it first."""
    workdir = tmp_path_factory.mktemp("smoke")
    result = _run_snakemake(workdir, "--configfile", str(SMOKE), "--cores", "2", "--resources", "gpu=1",
                           "--retries", "0")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return workdir


@pytest.fixture(scope="session")
def run_snakemake():
    """A function: `run_snakemake(workdir, *args, timeout=1500)` runs the repository's workflow in
    `workdir` as a user does and returns the CompletedProcess."""
    return _run_snakemake


@pytest.fixture(scope="session")
def smoke_preset() -> Path:
    """tests/presets/smoke.yaml: the whole study at toy size."""
    return SMOKE
