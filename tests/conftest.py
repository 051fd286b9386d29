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
