"""Does the answer move with the training budget? The exchange rate of studies trained for
different numbers of steps, side by side, with how far validation mAP still climbed.

`python -m billetjax.compare_budgets` is its command line. Only the plain rows every study has
(the same real and synthetic image counts) are compared, and each study's exchange rate is
computed again from its metrics files on the real-only rows they all share, so that every budget
prices its mixes on a curve through the same numbers of real images, with the first study's
evaluation settings (resamples, seed). `val_map50_last` is the last validation mAP@0.5 of those
rows' detectors (mean over experiments and seeds), `val_map50_climb` how much it rose over the
last half of training: where the climb is near 0 the detectors have levelled off, and an
exchange rate that still moves between budgets is budget-limited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from billetjax.evaluation.exchange import exchange_table
from billetjax.experiments import Experiment, table1

COLUMNS = ["study", "steps", "val_map50_last", "val_map50_climb", "test_set", "metric", "real_images",
           "synthetic_images", "real_equivalent", "lo", "hi", "covers", "value", "slope_per_doubling",
           "curve_real_images"]


@dataclass(frozen=True)
class Study:
    """A finished study: its working directory and the (validated) config it ran with."""

    folder: Path
    config: dict

    @property
    def experiments(self) -> list[Experiment]:
        return table1(self.config["experiments"], self.config["synth"]["method"])

    def plain_rows(self) -> dict[tuple[int, int], Experiment]:
        """The plain rows by (real, synthetic) images, the first of each."""
        rows: dict[tuple[int, int], Experiment] = {}
        for e in self.experiments:
            if e.is_plain:
                rows.setdefault((e.n_real, e.n_synthetic), e)
        return rows


def training_progress(folder: Path, experiments: Sequence[int] | None = None) -> tuple[int, float, float]:
    """(steps, last validation mAP@0.5, its rise over the last half of training) of a study's
    detectors (of `experiments`, default all), the mAPs averaged over experiments and seeds."""
    histories = sorted((folder / "results/detector").glob("exp*/seed*/history.csv"))
    if experiments is not None:
        histories = [p for p in histories if int(p.parent.parent.name.removeprefix("exp")) in set(experiments)]
    if not histories:
        raise FileNotFoundError(f"{folder}: no results/detector/exp*/seed*/history.csv: is it a finished study?")
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


def shared_rows(studies: Sequence[Study]) -> list[tuple[int, int]]:
    """(real, synthetic) image counts of the plain rows every study has, refused where the
    shared rows cannot give an exchange rate (two real-only rows and a row with synthetic images)."""
    keys = set.intersection(*(set(s.plain_rows()) for s in studies))
    curve = sorted(k for k in keys if k[1] == 0)
    mixes = sorted(k for k in keys if k[1] > 0)
    if len(curve) < 2 or not mixes:
        raise ValueError(
            f"the studies share real-only rows at {[k[0] for k in curve]} real images and rows with synthetic "
            f"images {mixes}: an exchange rate needs two real-only rows and one mix that every study trained")
    return curve + mixes


def budget_table(studies: Sequence[Study], metric: str) -> pd.DataFrame:
    """The exchange rates on `metric` of every study's shared mixes, each on the shared curve,
    sorted by steps, with the studies' training progress."""
    keys = shared_rows(studies)
    evaluation, root_seed = studies[0].config["evaluation"], int(studies[0].config["seed"])
    rows = []
    for study in studies:
        by_counts = study.plain_rows()
        experiments = [by_counts[k] for k in keys]
        paths = [p for e in experiments
                 for p in sorted((study.folder / "results/metrics" / f"exp{e.number}").glob("seed*/testset*.json"))]
        if not paths:
            raise FileNotFoundError(f"{study.folder}: no results/metrics/exp*/seed*/testset*.json for experiments "
                                    f"{[e.number for e in experiments]}: is it a finished study of that config?")
        steps, last, climb = training_progress(study.folder, [e.number for e in experiments])
        if steps != int(study.config["detector"]["steps"]):
            raise ValueError(f"{study.folder}: its detectors trained {steps} steps, its config says "
                             f"{study.config['detector']['steps']}: is it the config it ran with?")
        table = exchange_table(paths, experiments, evaluation, root_seed)
        curve = " ".join(str(k[0]) for k in keys if k[1] == 0)
        for row in table[table["metric"] == metric].itertuples():
            rows.append({"study": str(study.folder), "steps": int(study.config["detector"]["steps"]),
                         "val_map50_last": last, "val_map50_climb": climb, "test_set": row.test_set,
                         "metric": metric, "real_images": row.real_images, "synthetic_images": row.synthetic_images,
                         "real_equivalent": row.real_equivalent, "lo": row.lo, "hi": row.hi, "covers": row.covers,
                         "value": row.value, "slope_per_doubling": row.slope_per_doubling,
                         "curve_real_images": curve})
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.sort_values(["real_images", "synthetic_images", "test_set", "steps"], kind="stable").reset_index(drop=True)
