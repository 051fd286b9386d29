"""The exchange rate: how many real images a set with synthetic images is worth.

The study's real-only rows (experiments.sets rows without synthetic images, at several numbers of
real images) give a dose-response curve per test set and metric: the metric against
log(real images), a straight line fitted to the seed means (least squares). Each row with
synthetic images is read off that curve: its `real_equivalent` is the number of real images
whose curve value equals its own metric, i.e. exp((value - a) / b). A row of 100 real + 300
synthetic images with a real equivalent of 200 did the work of 100 more real images: 3 synthetic
images per real image saved.

The interval is computed on the log scale, over billets and seeds (`billetjax.evaluation.
intervals`): every resample redraws the billets of every run at once, refits the curve and reads
the row off it again; the seed part is the spread of the same reading made seed by seed (each seed
has its own detectors, GAN fit and synthetic pool). A curve that does not rise with real images
(the interval of its slope includes 0, or lies on the wrong side) cannot price anything: such rows
get no exchange rate, and `note` says why. A reading outside the curve's range of real images is
an extrapolation, flagged in `extrapolated`.

`results/tables/exchange_rate.csv` has the columns `COLUMNS` (the contract) and `EXTRA_COLUMNS`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from billetjax.evaluation.comparisons import LOWER_IS_BETTER, MIRRORS, METRICS, RunsOnTestSet, load_study
from billetjax.evaluation.intervals import Estimate
from billetjax.experiments import Experiment

logger = logging.getLogger(__name__)

COLUMNS = ["experiment", "test_set", "metric", "real_images", "synthetic_images", "real_equivalent", "lo", "hi"]
EXTRA_COLUMNS = [
    "real_images_saved",  # real_equivalent - real_images
    "saved_lo",
    "saved_hi",
    "synthetic_per_real_saved",  # synthetic images per real image saved (point estimate; where saved > 0)
    "value",  # the row's metric, mean over seeds
    "slope_per_doubling",  # the curve's rise per doubling of real images, points
    "slope_lo",
    "slope_hi",
    "log_se",  # standard error of log(real_equivalent)
    "df",
    "var_billets",  # the variance parts of log(real_equivalent)
    "var_seeds",
    "covers",
    "extrapolated",  # the reading lies outside the curve's range of real images
    "curve_experiments",  # the real-only rows the curve is fitted to
    "label",
    "note",
]
FLOAT_FORMAT = "%.4f"
# A sentence gives an upper bound above this many real images as "more than" it (the CSV keeps it).
UNBOUNDED_REAL_IMAGES = 100_000


def curve_rows(experiments: Sequence[Experiment]) -> list[Experiment]:
    """The plain real-only rows, one per number of real images (the first row with that number),
    ordered by it: the points of the dose-response curve."""
    rows: dict[int, Experiment] = {}
    for e in experiments:
        if e.is_plain and not e.uses_synthetic and e.n_real > 0 and e.n_real not in rows:
            rows[e.n_real] = e
    return [rows[n] for n in sorted(rows)]


def priced_rows(experiments: Sequence[Experiment]) -> list[Experiment]:
    """The rows read off the curve: every row with synthetic images."""
    return [e for e in experiments if e.uses_synthetic]


def fit_curve(y: np.ndarray, log_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dose-response line: least-squares intercept and slope of y[M, points] against log_n[points], per row of y."""
    x = log_n - log_n.mean()
    slope = (y - y.mean(1, keepdims=True)) @ x / (x @ x)
    return y.mean(1) - slope * log_n.mean(), slope


def log_reading(log_n: np.ndarray, sign: float):
    """The statistic: y[M, points + 1] (the curve's rows, then the priced row) -> log of the real
    equivalent; NaN where the fitted curve does not rise (oriented by `sign`)."""

    def statistic(y: np.ndarray) -> np.ndarray:
        intercept, slope = fit_curve(y[:, :-1], log_n)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (y[:, -1] - intercept) / slope
        return np.where(sign * slope > 0, out, np.nan)

    return statistic


def slope_per_doubling(log_n: np.ndarray):
    """The statistic: y[M, points] -> the curve's rise per doubling of real images."""
    return lambda y: fit_curve(y, log_n)[1] * math.log(2.0)


def exchange_rows(runs: RunsOnTestSet, metric: str, curve: list[Experiment], priced: list[Experiment]) -> list[dict]:
    """The rows of exchange_rate.csv for one test set and metric."""
    log_n = np.log(np.array([e.n_real for e in curve], dtype=np.float64))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    numbers = [e.number for e in curve]
    slope = runs.estimate(metric, numbers, slope_per_doubling(log_n))
    rises = np.isfinite(slope.lo) and (slope.lo > 0 if sign > 0 else slope.hi < 0)
    note = "" if rises else (
        f"the real-only curve does not {'rise' if sign > 0 else 'fall'} with real images on this test set "
        f"(slope {slope.value:+.2f} [{slope.lo:+.2f}, {slope.hi:+.2f}] points per doubling)")
    rows = []
    for e in priced:
        value = runs.values[metric][runs.index(e.number)]
        reading: Estimate | None = runs.estimate(metric, numbers + [e.number], log_reading(log_n, sign)) if rises else None
        row = {
            "experiment": e.number, "test_set": runs.test_set, "metric": metric,
            "real_images": e.n_real, "synthetic_images": e.n_synthetic,
            "real_equivalent": float("nan"), "lo": float("nan"), "hi": float("nan"),
            "real_images_saved": float("nan"), "saved_lo": float("nan"), "saved_hi": float("nan"),
            "synthetic_per_real_saved": float("nan"),
            "value": float(np.nanmean(value)) if np.isfinite(value).any() else float("nan"),
            "slope_per_doubling": slope.value, "slope_lo": slope.lo, "slope_hi": slope.hi,
            "log_se": float("nan"), "df": float("nan"), "var_billets": float("nan"), "var_seeds": float("nan"),
            "covers": "none", "extrapolated": False,
            "curve_experiments": " ".join(str(n) for n in numbers), "label": e.label, "note": note,
        }
        if reading is not None:
            if not np.isfinite(reading.value):
                row["note"] = "the row cannot be read off the curve"
            else:
                point = math.exp(reading.value)
                lo, hi = (math.exp(reading.lo), math.exp(reading.hi)) if np.isfinite(reading.lo) else (np.nan, np.nan)
                saved = point - e.n_real
                row.update(real_equivalent=point, lo=lo, hi=hi, real_images_saved=saved,
                           saved_lo=lo - e.n_real, saved_hi=hi - e.n_real,
                           synthetic_per_real_saved=e.n_synthetic / saved if saved > 0 else float("nan"),
                           log_se=reading.se, df=reading.df, var_billets=reading.var_billets,
                           var_seeds=reading.var_seeds, covers=reading.covers,
                           extrapolated=not (curve[0].n_real <= point <= curve[-1].n_real))
                if not np.isfinite(lo):
                    row["note"] = "too few resamples can be read off the curve for an interval"
        rows.append(row)
    return rows


def exchange_table(
    metrics_paths: Sequence[str | os.PathLike],
    experiments: Sequence[Experiment],
    evaluation: Mapping,
    root_seed: int,
    study: Mapping[int, RunsOnTestSet] | None = None,
) -> pd.DataFrame:
    """Every row with synthetic images read off the real-only curve, per test set and metric
    (the verdict metrics: FN, which mirrors TP, is left out). Refused without two real-only rows."""
    curve = curve_rows(experiments)
    if len(curve) < 2:
        raise ValueError(
            f"the exchange rate needs real-only rows at two or more numbers of real images; experiments.sets has "
            f"{len(curve)} ({', '.join(str(e.n_real) for e in curve) or 'none'}): add rows such as "
            "{synthetic_pct: 0, images_fraction: 0.5}")
    if study is None:
        study = load_study(metrics_paths, experiments, int(evaluation["bootstrap_samples"]), root_seed)
    priced = priced_rows(experiments)
    rows = []
    for runs in study.values():
        for metric in METRICS:
            if metric in MIRRORS or metric not in runs.values or not np.isfinite(runs.values[metric]).any():
                continue
            rows += exchange_rows(runs, metric, curve, priced)
    table = pd.DataFrame(rows, columns=COLUMNS + EXTRA_COLUMNS)
    logger.info("real-image equivalents (curve: experiments %s):\n%s", [e.number for e in curve],
                table[COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    return table


def write_exchange_outputs(metrics_paths: Sequence[str | os.PathLike], table_path: str | os.PathLike,
                           figure_path: str | os.PathLike, experiments: Sequence[Experiment], evaluation: Mapping,
                           root_seed: int, test_set_names: Sequence[str] = ()) -> pd.DataFrame:
    """`results/tables/exchange_rate.csv` and `results/figures/dose_response.png` (on the primary
    endpoint's metric), from one load of the study's metrics."""
    from billetjax.evaluation.dose_response import dose_response_figure

    study = load_study(metrics_paths, experiments, int(evaluation["bootstrap_samples"]), root_seed)
    table = exchange_table(metrics_paths, experiments, evaluation, root_seed, study=study)
    path = Path(table_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format=FLOAT_FORMAT)
    dose_response_figure(study, table, experiments, evaluation["primary"]["metric"], figure_path, test_set_names)
    return table


def exchange_sentences(table: pd.DataFrame, metric: str, test_set_names: Mapping[int, str] | None = None) -> list[str]:
    """Sentences on `metric`, per test set: one per priced row, e.g. "On test set 3 (poorly or
    partially visible), 100 real + 300 synthetic images did the work of 160 [120, 210] real ones",
    or one for the whole test set where its curve prices nothing."""
    names = test_set_names or {}
    out = []
    rows = table[table["metric"] == metric]
    for test_set, group in rows.groupby("test_set", sort=True):
        label = f"test set {int(test_set)}" + (f" ({names[int(test_set)]})" if int(test_set) in names else "")
        if group["real_equivalent"].isna().all() and group["note"].nunique() == 1 and group["note"].iloc[0]:
            out.append(f"On {label}: no exchange rate, {group['note'].iloc[0]}.")
            continue
        for row in group.itertuples():
            mix = " + ".join(f"{n} {kind}" for n, kind in ((row.real_images, "real"), (row.synthetic_images, "synthetic"))
                             if n)
            if not np.isfinite(row.real_equivalent):
                out.append(f"On {label}, {mix} images: no exchange rate ({row.note or 'no reading'}).")
                continue
            if not np.isfinite(row.lo):
                interval = "[no interval]"
            elif row.hi > UNBOUNDED_REAL_IMAGES:  # the log-scale interval has left every plausible count
                interval = f"[{row.lo:.0f}, more than {UNBOUNDED_REAL_IMAGES:,}]"
            else:
                interval = f"[{row.lo:.0f}, {row.hi:.0f}]"
            extra = " (an extrapolation beyond the curve)" if row.extrapolated else ""
            out.append(f"On {label}, {mix} images did the work of {row.real_equivalent:.0f} {interval} real ones "
                       f"({metric}, 95 % over {row.covers}){extra}.")
    return out
