"""Does the answer move with the training budget? The exchange rate of studies trained for
different numbers of steps, side by side, with how far validation mAP still climbed.

    python -m billetjax.evaluation.budget STUDY_DIR [STUDY_DIR ...] [--metric TP] [--out CSV]

Each STUDY_DIR is a working directory of a finished study (its `results/`): the default study
and, e.g., `presets/budget-2x.yaml` and `presets/budget-4x.yaml` run in directories of their own.
Rows with the same real and synthetic image counts are compared. `val_map50_last` is the last
validation mAP@0.5 of the study's detectors (mean over experiments and seeds), `val_map50_climb`
how much it rose over the last half of training: where the climb is near 0 the detectors have
levelled off, and an exchange rate that still moves between budgets is budget-limited.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["study", "steps", "val_map50_last", "val_map50_climb", "test_set", "metric", "real_images",
           "synthetic_images", "real_equivalent", "lo", "hi", "covers"]


def training_progress(study: Path) -> tuple[int, float, float]:
    """(steps, last validation mAP@0.5, its rise over the last half of training) of a study's
    detectors, the mAPs averaged over every experiment and seed."""
    histories = sorted((study / "results/detector").glob("exp*/seed*/history.csv"))
    if not histories:
        raise FileNotFoundError(f"{study}: no results/detector/exp*/seed*/history.csv: is it a finished study?")
    steps, last, climb = [], [], []
    for path in histories:
        history = pd.read_csv(path).dropna(subset=["val_map50"])
        if history.empty:
            continue
        final = int(history["step"].max())
        halfway = history[history["step"] <= final / 2]
        steps.append(final)
        last.append(float(history["val_map50"].iloc[-1]))
        climb.append(float(history["val_map50"].iloc[-1] - (halfway["val_map50"].iloc[-1] if len(halfway) else 0.0)))
    return (max(steps) if steps else 0, float(np.mean(last)) if last else float("nan"),
            float(np.mean(climb)) if climb else float("nan"))


def budget_table(studies: Sequence[str | Path], metric: str) -> pd.DataFrame:
    """The exchange rates on `metric` of every study, sorted by steps, with their progress."""
    rows = []
    for study in map(Path, studies):
        steps, last, climb = training_progress(study)
        table = pd.read_csv(study / "results/tables/exchange_rate.csv", keep_default_na=False, na_values=[""])
        table = table[table["metric"] == metric]
        for row in table.itertuples():
            rows.append({"study": str(study), "steps": steps, "val_map50_last": last, "val_map50_climb": climb,
                         "test_set": row.test_set, "metric": metric, "real_images": row.real_images,
                         "synthetic_images": row.synthetic_images, "real_equivalent": row.real_equivalent,
                         "lo": row.lo, "hi": row.hi, "covers": row.covers})
    out = pd.DataFrame(rows, columns=COLUMNS)
    shared = out.groupby(["real_images", "synthetic_images"])["study"].nunique()
    keep = shared[shared == len(studies)].index
    out = out.set_index(["real_images", "synthetic_images"]).loc[keep].reset_index()[COLUMNS]
    return out.sort_values(["real_images", "synthetic_images", "test_set", "steps"], kind="stable").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="working directories of finished studies")
    parser.add_argument("--metric", default="TP")
    parser.add_argument("--out", default=None, help="CSV to write (default: print only)")
    args = parser.parse_args(argv)
    table = budget_table(args.studies, args.metric)
    if table.empty:
        print("the studies share no row with synthetic images (same real and synthetic counts)", file=sys.stderr)
        return 1
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.out:
        table.to_csv(args.out, index=False, float_format="%.4f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
