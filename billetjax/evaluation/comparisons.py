"""Paired comparisons with a reference experiment, and the replacement curve's summary.

Every experiment of Table 1 is compared with a reference (`evaluation.reference_experiment`,
experiment 1 = all real by default) on every test set and each of the paper's metrics TP, MC, FN,
FP and CB (docs/architecture.md, "Metrics"):

- **difference**: the experiment's metric minus the reference's, each the mean over seeds, in
  percentage points (for FP, MC and FN a negative difference is an improvement);
- **lo, hi**: its 95 % percentile interval from a *paired* bootstrap. Every resample draws the test
  billets with replacement once and evaluates both models on that same draw (and, with several
  seeds, draws the seeds with replacement once, seed s of the experiment paired with seed s of
  the reference: at one seed every experiment starts from the same weights and nested data,
  `billetjax.utils.run_seed`). What a billet's difficulty adds to both sides cancels, so the
  interval of the difference is narrower than the two unpaired intervals of
  `results/tables/testset{n}.csv` suggest: overlapping unpaired intervals do not mean "no
  difference";
- **p_value**: two-sided bootstrap p-value of "no difference": twice the smaller share of resampled
  differences on either side of 0 (a resample at exactly 0 counts on both sides), with the usual
  +1 correction, at most 1 (below 0.05 about when the 95 % interval excludes 0);
- **verdict** against the metric's non-inferiority margin δ > 0 (`evaluation.margins`, points).
  With the interval oriented so that positive means better (higher TP or CB; for FP, MC and FN
  the interval of the negated difference, [-hi, -lo]) as [L, H]:

  ============  ==============================  ==========================================
  verdict       condition                       reading
  ============  ==============================  ==========================================
  superior      L > 0                           better than the reference
  non-inferior  -δ < L <= 0                     at worst δ worse (may be significantly
                                                worse by less than δ: see p_value)
  inferior      H < -δ                          worse by more than δ
  inconclusive  L <= -δ <= H, or no interval    the data cannot tell (widen the test sets,
                                                add seeds, or accept a larger δ)
  ============  ==============================  ==========================================

  The four are a partition: where the interval lies relative to the two points -δ and 0. For a
  lower-is-better metric, in the difference's own sign: superior if hi < 0, non-inferior if
  0 <= hi < δ, inferior if lo > δ, else inconclusive. An interval touching a bound exactly does
  not pass it. Without an interval (`evaluation.bootstrap_samples: 0`, or a metric undefined on
  the set) the verdict is inconclusive.

`results/tables/comparisons.csv` has the columns `COLUMNS` (the contract) and then `EXTRA_COLUMNS`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from billetjax.evaluation.bootstrap import LEVEL, resample_weights
from billetjax.evaluation.evaluate import RUN_COLUMNS, load_metrics
from billetjax.evaluation.metrics import COUNT_COLUMNS, percentages
from billetjax.experiments import Experiment
from billetjax.utils import stage_seed

logger = logging.getLogger(__name__)

METRICS = ("TP", "MC", "FN", "FP", "CB")
LOWER_IS_BETTER = frozenset({"MC", "FN", "FP"})
VERDICTS = ("superior", "non-inferior", "inferior", "inconclusive")
ACCEPTED = frozenset({"superior", "non-inferior"})  # what "can replace" means in the summary
COLUMNS = ["experiment", "reference", "test_set", "metric", "difference", "lo", "hi", "margin", "verdict"]
EXTRA_COLUMNS = [
    "better",  # "higher" or "lower": which direction of the metric is an improvement
    "p_value",
    "n_seeds",
    "n_billets",
    "value",  # the experiment's metric, mean over seeds
    "reference_value",
    "synthetic_pct",
    "n_images",
    "reference_pct",  # the reference's synthetic share
    "on_curve",  # a plain row (Experiment.is_plain) with the reference's number of training images: a point of the replacement curve
    "difference_seed_sd",  # spread of the per-seed paired differences (empty with one seed)
    "difference_seed_min",
    "difference_seed_max",
    "label",  # the experiment as Table 1 names it (Experiment.label)
]
FLOAT_FORMAT = "%.4f"


def verdict(lo: float, hi: float, margin: float, lower_is_better: bool = False) -> str:
    """Superior, non-inferior, inferior or inconclusive (module docstring) from the interval
    [lo, hi] of the difference experiment - reference and the margin (> 0, same units)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if margin <= 0 or not np.isfinite(margin):
        raise ValueError(f"a non-inferiority margin must be a positive number, got {margin}")
    low, high = (-hi, -lo) if lower_is_better else (lo, hi)  # oriented: positive = better
    if low > 0:
        return "superior"
    if low > -margin:
        return "non-inferior"
    if high < -margin:
        return "inferior"
    return "inconclusive"


def _five_metrics(totals: np.ndarray) -> dict[str, np.ndarray]:
    """TP, MC, FN, FP, CB from summed per-image counts in `RUN_COLUMNS` order (any leading axes)."""
    return percentages(np.asarray(totals, dtype=np.float64)[..., : len(COUNT_COLUMNS)])


def _seed_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over the last axis, leaving NaN entries out (NaN where all are)."""
    finite = np.isfinite(values)
    w = np.where(finite, weights, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w.sum(-1) > 0, (np.where(finite, values, 0.0) * w).sum(-1) / w.sum(-1), np.nan)


def paired_bootstrap(
    counts: np.ndarray,
    reference_counts: np.ndarray,
    n_samples: int,
    seed: int,
    level: float = LEVEL,
) -> dict[str, dict]:
    """The paired difference (experiment - reference) of each metric and its bootstrap interval.

    counts, reference_counts: per-image counts [seeds, images, k] (or [images, k] for one seed),
    `RUN_COLUMNS` order (at least the `COUNT_COLUMNS`), the same images in the same order and
    seed s of one paired with seed s of the other. Each resample draws the images once for both
    sides and, with several seeds, the seeds once for both sides; the statistic is the mean over
    the drawn seeds of the per-seed differences, i.e. the difference of the means over seeds.

    Returns {metric: {difference, lo, hi, p_value, per_seed (float64[seeds])}}; NaN bounds and
    p-value without resamples (n_samples 0, no images).
    """
    a = np.asarray(counts, dtype=np.float64)
    b = np.asarray(reference_counts, dtype=np.float64)
    a, b = (a[None] if a.ndim == 2 else a), (b[None] if b.ndim == 2 else b)
    if a.shape != b.shape:
        raise ValueError(f"paired counts need the same seeds and images on both sides: {a.shape} vs {b.shape}")
    n_seeds, n_images = a.shape[:2]
    per_seed = {m: _five_metrics(a.sum(1))[m] - _five_metrics(b.sum(1))[m] for m in METRICS}
    out = {}
    for m in METRICS:
        finite = per_seed[m][np.isfinite(per_seed[m])]
        out[m] = {"difference": float(finite.mean()) if finite.size else float("nan"),
                  "lo": float("nan"), "hi": float("nan"), "p_value": float("nan"), "per_seed": per_seed[m]}
    if n_samples <= 0 or n_images == 0:
        return out
    image_seed, seed_seed = (int(s) for s in np.random.SeedSequence(int(seed)).generate_state(2))
    image_w = resample_weights(n_images, n_samples, image_seed).astype(np.float64)  # [B, images]
    seed_w = (resample_weights(n_seeds, n_samples, seed_seed).astype(np.float64) if n_seeds > 1
              else np.ones((n_samples, 1)))  # [B, seeds]
    ma = _five_metrics(np.einsum("bn,snk->bsk", image_w, a))
    mb = _five_metrics(np.einsum("bn,snk->bsk", image_w, b))
    tail = 100.0 * (1.0 - level) / 2.0
    for m in METRICS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            diffs = _seed_mean(ma[m] - mb[m], seed_w)  # [B]
        diffs = diffs[np.isfinite(diffs)]
        if diffs.size == 0:
            continue
        lo, hi = np.percentile(diffs, [tail, 100.0 - tail])
        below = (1 + np.count_nonzero(diffs <= 0)) / (diffs.size + 1)
        above = (1 + np.count_nonzero(diffs >= 0)) / (diffs.size + 1)
        out[m].update(lo=float(lo), hi=float(hi), p_value=float(min(1.0, 2.0 * min(below, above))))
    return out


def _count_stack(runs: list[dict]) -> np.ndarray:
    """float64[seeds, images, len(RUN_COLUMNS)] of runs on one test set (same images checked)."""
    first = runs[0]
    for run in runs:
        if run["per_image"]["columns"] != list(RUN_COLUMNS):
            raise ValueError(f"experiment {run['experiment']}, seed {run['seed']}: per-image columns "
                             f"{run['per_image']['columns']}, expected {list(RUN_COLUMNS)}")
        if run["per_image"]["image_id"] != first["per_image"]["image_id"]:
            raise ValueError(
                f"test set {run['test_set']}: experiment {run['experiment']} seed {run['seed']} and experiment "
                f"{first['experiment']} seed {first['seed']} were evaluated on different images; "
                "a paired comparison needs the same billets"
            )
    n = len(first["per_image"]["image_id"])
    return np.stack([np.asarray(r["per_image"]["counts"], dtype=np.float64).reshape(n, len(RUN_COLUMNS))
                     for r in runs])


def comparison_rows(
    runs: list[dict],
    reference_runs: list[dict],
    margins: Mapping[str, float],
    n_samples: int,
    seed: int,
) -> list[dict]:
    """One row per metric (`COLUMNS` + the statistical extras) for one experiment against the
    reference on one test set; runs: the metrics files (`load_metrics`) of each side, one per seed."""
    runs = sorted(runs, key=lambda r: int(r["seed"]))
    reference_runs = sorted(reference_runs, key=lambda r: int(r["seed"]))
    seeds, ref_seeds = [int(r["seed"]) for r in runs], [int(r["seed"]) for r in reference_runs]
    if seeds != ref_seeds:
        raise ValueError(f"experiment {runs[0]['experiment']} has seeds {seeds}, the reference "
                         f"{reference_runs[0]['experiment']} {ref_seeds}; a paired comparison needs the same seeds")
    counts = _count_stack(runs + reference_runs)
    result = paired_bootstrap(counts[: len(runs)], counts[len(runs):], n_samples, seed)
    value = _five_metrics(counts[: len(runs)].sum(1))
    reference_value = _five_metrics(counts[len(runs):].sum(1))
    rows = []
    for m in METRICS:
        r = result[m]
        per_seed = r["per_seed"][np.isfinite(r["per_seed"])]
        several = per_seed.size > 1
        rows.append({
            "experiment": int(runs[0]["experiment"]),
            "reference": int(reference_runs[0]["experiment"]),
            "test_set": int(runs[0]["test_set"]),
            "metric": m,
            "difference": r["difference"],
            "lo": r["lo"],
            "hi": r["hi"],
            "margin": float(margins[m]),
            "verdict": verdict(r["lo"], r["hi"], float(margins[m]), m in LOWER_IS_BETTER),
            "better": "lower" if m in LOWER_IS_BETTER else "higher",
            "p_value": r["p_value"],
            "n_seeds": len(runs),
            "n_billets": int(counts[0, :, RUN_COLUMNS.index("has_gt")].sum()),
            "value": float(np.nanmean(value[m])) if np.isfinite(value[m]).any() else float("nan"),
            "reference_value": (float(np.nanmean(reference_value[m])) if np.isfinite(reference_value[m]).any()
                                else float("nan")),
            "difference_seed_sd": float(per_seed.std(ddof=1)) if several else float("nan"),
            "difference_seed_min": float(per_seed.min()) if per_seed.size else float("nan"),
            "difference_seed_max": float(per_seed.max()) if per_seed.size else float("nan"),
        })
    return rows


def comparison_table(
    metrics_paths: list[str | os.PathLike],
    experiments: Sequence[Experiment],
    evaluation: Mapping,
    root_seed: int,
) -> pd.DataFrame:
    """Every experiment of Table 1 (`billetjax.experiments.table1`) but the reference against the
    reference, on every test set the metrics files cover: rows by test set, experiment, then
    metric (`METRICS` order).

    evaluation: the validated `evaluation` section (reference_experiment, margins, bootstrap_samples).
    """
    rows_of_table1 = {e.number: e for e in experiments}
    reference = int(evaluation["reference_experiment"])
    if reference not in rows_of_table1:
        raise ValueError(f"evaluation.reference_experiment = {reference}, but experiments.sets has "
                         f"{len(rows_of_table1)} rows")
    runs: dict[tuple[int, int], list[dict]] = {}
    for path in metrics_paths:
        run = load_metrics(path)
        runs.setdefault((int(run["test_set"]), int(run["experiment"])), []).append(run)
    unknown = sorted({e for _, e in runs} - set(rows_of_table1))
    if unknown:
        raise ValueError(f"metrics for experiments {unknown}, which experiments.sets does not have")
    ref_row = rows_of_table1[reference]
    rows = []
    for test_set in sorted({t for t, _ in runs}):
        if (test_set, reference) not in runs:
            raise ValueError(f"test set {test_set}: no metrics of the reference experiment {reference} among the inputs")
        for number, spec in rows_of_table1.items():
            if number == reference:
                continue
            if (test_set, number) not in runs:
                raise ValueError(f"test set {test_set}: no metrics for experiment {number} among the inputs")
            seed = stage_seed(root_seed, "evaluation", "comparison", test_set, number, reference)
            for row in comparison_rows(runs[(test_set, number)], runs[(test_set, reference)],
                                       evaluation["margins"], int(evaluation["bootstrap_samples"]), seed):
                row.update(synthetic_pct=spec.synthetic_pct, n_images=spec.n_images,
                           reference_pct=ref_row.synthetic_pct, label=spec.label,
                           on_curve=spec.is_plain and spec.n_images == ref_row.n_images)
                rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS + EXTRA_COLUMNS)
    logger.info("experiment - reference %d, paired %d-resample bootstrap, 95 %%:\n%s", reference,
                int(evaluation["bootstrap_samples"]),
                table[COLUMNS + ["p_value"]].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return table


def write_comparison_table(
    metrics_paths: list[str | os.PathLike],
    out_path: str | os.PathLike,
    experiments: Sequence[Experiment],
    evaluation: Mapping,
    root_seed: int,
) -> pd.DataFrame:
    """`results/tables/comparisons.csv` from the metrics files of every experiment, seed and test set."""
    table = comparison_table(metrics_paths, experiments, evaluation, root_seed)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format=FLOAT_FORMAT)
    return table


# ------------------------------------------------------------------ the replacement curve


def largest_accepted_share(curve: pd.DataFrame) -> float | None:
    """The largest synthetic share X such that every experiment of the curve with a share up to X
    is non-inferior or superior; None if the smallest share already fails.

    curve: the comparison rows of one test set and metric with `on_curve` true (the reference's
    number of training images; the reference itself has no row), with `synthetic_pct` and
    `verdict`. "Up to X %" is read literally: a larger share that passes after a smaller one
    failed does not count.
    """
    accepted = None
    for share, group in curve.sort_values("synthetic_pct", kind="stable").groupby("synthetic_pct", sort=True):
        if not group["verdict"].isin(ACCEPTED).all():
            break
        accepted = float(share)
    return accepted


def replacement_summary(
    table: pd.DataFrame,
    metric: str,
    reference_pct: float,
    test_set_names: Mapping[int, str] | None = None,
) -> list[str]:
    """One sentence per test set: up to which synthetic share the curve is non-inferior to the
    reference on `metric` (margin, 95 %), or that no share is. table: comparisons.csv's rows."""
    names = test_set_names or {}
    reference = int(table["reference"].iloc[0]) if len(table) else None
    against = ("all-real" if reference_pct == 0
               else f"experiment {reference} ({reference_pct:g} % synthetic)")
    sentences = []
    rows = table[(table["metric"] == metric) & table["on_curve"].astype(bool)]
    for test_set in sorted(table["test_set"].unique()):
        curve = rows[rows["test_set"] == test_set]
        label = f"test set {int(test_set)}" + (f" ({names[int(test_set)]})" if int(test_set) in names else "")
        if curve.empty:
            sentences.append(f"{label[0].upper()}{label[1:]}: no experiment shares the reference's number of "
                             "training images, so there is no curve.")
            continue
        margin = float(curve["margin"].iloc[0])
        qualifier = f"({metric}, margin {margin:g} points, 95 %)"
        share = largest_accepted_share(curve)
        if share is None:
            smallest = float(curve["synthetic_pct"].min())
            sentences.append(f"No synthetic share is non-inferior to {against} on {label} {qualifier}: "
                             f"already {smallest:g} % synthetic is {curve.loc[curve['synthetic_pct'] == smallest, 'verdict'].iloc[0]}.")
        else:
            sentences.append(f"Up to {share:g} % synthetic data is non-inferior to {against} on {label} {qualifier}.")
    return sentences


def write_replacement_summary(
    comparisons_csv: str | os.PathLike,
    out_path: str | os.PathLike,
    metric: str,
    experiments: Sequence[Experiment],
    test_set_names: list[str] | None = None,
) -> list[str]:
    """`results/tables/replacement_summary.txt`: the summary sentence per test set for `metric`,
    then the largest accepted share of every metric per test set; each sentence is also logged."""
    table = pd.read_csv(comparisons_csv)
    rows = {e.number: e for e in experiments}
    reference = int(table["reference"].iloc[0])
    names = {i: n for i, n in enumerate(test_set_names or [], 1)}
    sentences = replacement_summary(table, metric, rows[reference].synthetic_pct, names)
    for sentence in sentences:
        logger.info("%s", sentence)
    lines = list(sentences)
    grid = {}
    for (test_set, m), curve in table[table["on_curve"].astype(bool)].groupby(["test_set", "metric"]):
        share = largest_accepted_share(curve)
        grid.setdefault(m, {})[int(test_set)] = "-" if share is None else f"{share:g}"
    if grid:
        frame = pd.DataFrame(grid).T.reindex([m for m in METRICS if m in grid])
        frame.columns = [f"test set {c}" for c in frame.columns]
        frame.insert(0, "margin", [f"{table.loc[table['metric'] == m, 'margin'].iloc[0]:g}" for m in frame.index])
        lines += ["", "Largest synthetic share (%) up to which every experiment of the curve is non-inferior "
                  "to the reference, per metric (margin in points) and test set ('-': none):", frame.to_string()]
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return sentences
