"""Put studies trained for different numbers of steps side by side: does the exchange rate move
with the training budget? (`billetjax.evaluation.budget` says how it compares them.)

    python -m billetjax.compare_budgets STUDY [STUDY ...] [--metric TP] [--out CSV]

Each STUDY is the working directory of a finished study, as `DIR` (it ran on config.yaml alone)
or `DIR=CONFIG` (the file it ran with as `--configfile`), e.g.

    python -m billetjax.compare_budgets . runs/budget-2x=presets/budget-2x.yaml runs/budget-4x=presets/budget-4x.yaml
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from billetjax.config import ConfigError, load_config
from billetjax.evaluation.budget import Study, budget_table


def parse_study(text: str) -> Study:
    """`DIR` or `DIR=CONFIG`: the folder and its config, merged over config.yaml and validated."""
    folder, _, overlay = text.partition("=")
    return Study(Path(folder), load_config(*([overlay] if overlay else [])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="DIR or DIR=CONFIG of finished studies")
    parser.add_argument("--metric", default="TP")
    parser.add_argument("--out", default=None, help="CSV to write (default: print only)")
    args = parser.parse_args(argv)
    try:
        table = budget_table([parse_study(s) for s in args.studies], args.metric)
    except (ValueError, FileNotFoundError, ConfigError) as err:
        print(f"compare_budgets: {err}", file=sys.stderr)
        return 1
    shown = table.assign(study=[os.path.relpath(s) for s in table["study"]])
    with pd.option_context("display.width", 200):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.out:
        table.to_csv(args.out, index=False, float_format="%.4f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
