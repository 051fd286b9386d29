"""Paired comparisons with a reference experiment, under a plan stated before the numbers.

Every experiment of Table 1 is compared with a reference (`evaluation.reference_experiment`,
experiment 1 = all real by default) on every test set and metric (docs/statistics.md):

- **difference**: the experiment's metric minus the reference's, each the mean over seeds, in
  percentage points (for FP, MC and FN a negative difference is an improvement);
- **lo, hi**: its 95 % interval over billets *and* seeds (`billetjax.evaluation.intervals`): a
  paired billet bootstrap (every run resampled with the same billets) plus the between-seed part,
  with Satterthwaite's degrees of freedom. `var_billets` and `var_seeds` are the two parts;
  `covers` says which the interval holds (one seed: billets only);
- **margin**: the non-inferiority margin δ, pre-stated in the config: a fraction of the measured
  real-data effect (`evaluation.margin_fraction`: the reference minus the smallest real-only row,
  on that test set and metric) or the absolute `evaluation.margins`; `margin_source` says which;
- **verdict** from the interval oriented so that positive means better, [L, H]: superior (L > 0),
  non-inferior (-δ < L <= 0), inferior (H < -δ), inconclusive (else); or **no verdict**, with its
  `reason`: FN (it mirrors TP: FN = 100 - TP), a metric without a margin, or a test set where the
  reference does not separate from its own smallest real-only row, or reads at the floor (assay
  sensitivity: without it, non-inferiority would also pass worthless synthetic data);
- **the plan**: `evaluation.primary` names one metric and test set. Its rows on the replacement
  curve (plain rows with the reference's number of images) are tested in a fixed sequence of
  growing synthetic share, each at one-sided 2.5 %, the sequence stopping at the first failure
  (this keeps the family-wise error at 2.5 % without adjustment). Every other verdict is
  secondary: Holm-adjusted over the study (`p_adjusted`, `verdict_adjusted`). `role` says which;
- **equivalent**: two one-sided tests at 2.5 % each (the 95 % interval inside ±δ), for any claim
  of "as good as";
- **the companion**: mAP@0.5 (x 100), which needs no score threshold, on the primary test set,
  with the same paired interval and no verdict (`COMPANION`).

`results/tables/comparisons.csv` has the columns `COLUMNS` (the contract) and then `EXTRA_COLUMNS`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from billetjax.evaluation.bootstrap import LEVEL, resample_weights, resampled_sums
from billetjax.coco_map import ApMatches, resampled_map50
from billetjax.evaluation.evaluate import RUN_COLUMNS, load_metrics, metrics_from_counts
from billetjax.evaluation.intervals import Estimate, crossed_interval, holm
from billetjax.experiments import Experiment
from billetjax.seeds import stage_seed

logger = logging.getLogger(__name__)

# The paper's character metrics, then whole IDs (docs/id-reading.md): the best plain reading right
# (id_read_rate), and the plant's read and misread rates at the operating point of the pattern and
# lexicon decoders (the reject rate is 100 - read - misread: no metric of its own here).
METRICS = ("TP", "MC", "FN", "FP", "CB", "id_read_rate", "id_read_pattern", "id_misread_pattern",
           "id_read_lexicon", "id_misread_lexicon", "mAP50")
LOWER_IS_BETTER = frozenset({"MC", "FN", "FP", "id_misread_pattern", "id_misread_lexicon"})
# FN = 100 - TP: a verdict on it would only repeat TP's.
MIRRORS = {"FN": "TP"}
# mAP@0.5 (x 100, in points) needs no score threshold: the primary endpoint's companion, on the
# primary test set only (its resamples cost a matrix product per run), with an interval and no
# verdict of its own.
COMPANION = "mAP50"
VERDICTS = ("superior", "non-inferior", "inferior", "inconclusive", "no verdict")
ACCEPTED = frozenset({"superior", "non-inferior"})  # what "can replace" means in the summary
ALPHA = (1.0 - LEVEL) / 2.0  # one-sided level of each non-inferiority test (2.5 %)
# A reference whose TP is below this (percent) reads at the floor: nothing can be inferior to it.
FLOOR_TP_PCT = 1.0
COLUMNS = ["experiment", "reference", "test_set", "metric", "difference", "lo", "hi", "margin", "verdict"]
EXTRA_COLUMNS = [
    "better",  # "higher" or "lower": which direction of the metric is an improvement
    "role",  # primary | secondary | descriptive (no verdict)
    "reason",  # why a row has no verdict, or why its adjusted verdict differs
    "p_noninferiority",  # one-sided p of "worse by the margin or more"
    "p_adjusted",  # Holm over the secondary rows; the primary rows' fixed sequence needs none
    "verdict_adjusted",  # the verdict under the plan (primary sequence, Holm for the rest)
    "equivalent",  # both one-sided tests at 2.5 % pass: the interval lies inside +-margin
    "tost_p",
    "p_value",  # two-sided p of "no difference"
    "margin_source",  # "fraction of the real-data effect" | "absolute" | "" (none)
    "real_effect",  # the reference minus the smallest real-only row (oriented: positive = the reference better)
    "real_effect_lo",
    "real_effect_hi",
    "se",
    "df",
    "var_billets",
    "var_seeds",
    "covers",
    "mc_error",  # Monte-Carlo standard error of a bound from the finite bootstrap
    "n_seeds",
    "n_billets",
    "value",  # the experiment's metric, mean over seeds
    "reference_value",
    "synthetic_pct",
    "n_images",
    "real_images",
    "synthetic_images",
    "reference_pct",  # the reference's synthetic share
    "on_curve",  # a plain row with the reference's number of training images: a point of the replacement curve
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


def difference(y: np.ndarray) -> np.ndarray:
    """The statistic of a paired comparison: y[:, 0] - y[:, 1] (experiment - reference)."""
    return y[:, 0] - y[:, 1]


# ------------------------------------------------------------------ the study's runs


@dataclass(frozen=True)
class RunsOnTestSet:
    """Every experiment's per-image counts on one test set, with their metrics on the full set and
    on one shared draw of billet resamples (each run resampled with the same billets)."""

    test_set: int
    experiments: tuple[int, ...]  # the order of the experiment axis below
    seeds: tuple[int, ...]
    n_billets: int
    values: dict[str, np.ndarray]  # metric -> float[experiments, seeds]
    resampled: dict[str, np.ndarray]  # metric -> float[resamples, experiments, seeds]

    def index(self, experiment: int) -> int:
        return self.experiments.index(experiment)

    def estimate(self, metric: str, experiments: Sequence[int], statistic) -> Estimate:
        """`statistic` (float[M, len(experiments)] -> float[M]) of these experiments' seed-mean
        metric, with its interval over billets and seeds."""
        rows = [self.index(e) for e in experiments]
        return crossed_interval(self.values[metric][rows], self.resampled[metric][:, rows], statistic,
                                self.n_billets)


def _count_stack(runs: list[dict]) -> np.ndarray:
    """float64[seeds, images, len(RUN_COLUMNS)] of runs on one test set (same images checked)."""
    first = runs[0]
    for run in runs:
        if run["per_image"]["columns"] != list(RUN_COLUMNS):
            raise ValueError(f"experiment {run['experiment']}, seed {run['seed']}: per-image columns "
                             f"{run['per_image']['columns']}, expected {list(RUN_COLUMNS)}: evaluate it again")
        if run["per_image"]["image_id"] != first["per_image"]["image_id"]:
            raise ValueError(
                f"test set {run['test_set']}: experiment {run['experiment']} seed {run['seed']} and experiment "
                f"{first['experiment']} seed {first['seed']} were evaluated on different images; "
                "a paired comparison needs the same billets"
            )
    n = len(first["per_image"]["image_id"])
    return np.stack([np.asarray(r["per_image"]["counts"], dtype=np.float64).reshape(n, len(RUN_COLUMNS))
                     for r in runs])


def load_study(metrics_paths: Sequence[str | os.PathLike], experiments: Sequence[Experiment],
               n_resamples: int, root_seed: int, map_test_sets: Collection[int] = ()) -> dict[int, RunsOnTestSet]:
    """The metrics files of every experiment, seed and test set, by test set, with their metrics
    on `n_resamples` paired billet resamples (seeded per test set from `root_seed`); on the test
    sets in `map_test_sets` also mAP@0.5 x 100 (`COMPANION`), from the files' `ap_matches`."""
    known = {e.number for e in experiments}
    runs: dict[int, dict[int, list[dict]]] = {}
    for path in metrics_paths:
        run = load_metrics(path)
        runs.setdefault(int(run["test_set"]), {}).setdefault(int(run["experiment"]), []).append(run)
    unknown = sorted({e for by_exp in runs.values() for e in by_exp} - known)
    if unknown:
        raise ValueError(f"metrics for experiments {unknown}, which experiments.sets does not have")
    out = {}
    for test_set, by_exp in sorted(runs.items()):
        missing = sorted(known - set(by_exp))
        if missing:
            raise ValueError(f"test set {test_set}: no metrics for experiments {missing} among the inputs")
        numbers = tuple(sorted(by_exp))
        seeds = None
        for number in numbers:
            by_exp[number].sort(key=lambda r: int(r["seed"]))
            these = tuple(int(r["seed"]) for r in by_exp[number])
            if seeds is None:
                seeds = these
            elif these != seeds:
                raise ValueError(f"test set {test_set}: experiment {number} has seeds {list(these)}, experiment "
                                 f"{numbers[0]} {list(seeds)}; paired comparisons need the same seeds")
        counts = _count_stack([r for n in numbers for r in by_exp[n]]).reshape(
            len(numbers), len(seeds), -1, len(RUN_COLUMNS))  # [E, S, n, k]
        first_run = by_exp[numbers[0]][0]
        with_pattern, with_lexicon = first_run.get("id_pattern") is not None, bool(first_run.get("lexicon"))
        n_images = counts.shape[2]
        weights = resample_weights(n_images, max(int(n_resamples), 0),
                                   stage_seed(root_seed, "evaluation", "comparison", test_set)).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = metrics_from_counts(counts.sum(2), with_pattern, with_lexicon)  # metric -> [E, S]
            resampled = metrics_from_counts(resampled_sums(weights, counts), with_pattern, with_lexicon)
        if test_set in map_test_sets:
            values[COMPANION], resampled[COMPANION] = _map_resampled(
                [by_exp[n] for n in numbers], weights)
        n_billets = int(counts[0, 0, :, RUN_COLUMNS.index("has_gt")].sum())
        out[test_set] = RunsOnTestSet(test_set, numbers, seeds, n_billets,
                                    {m: np.asarray(v, dtype=np.float64) for m, v in values.items()},
                                    {m: np.asarray(v, dtype=np.float64) for m, v in resampled.items()})
    return out


def _map_resampled(runs: list[list[dict]], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mAP@0.5 x 100 of runs [experiments][seeds] on the full test set ([E, S]) and under each
    resample's weights ([B, E, S]); the runs' `ap_matches` must list the images in the order of
    their per-image counts (evaluate writes them so)."""
    values = np.full((len(runs), len(runs[0])), np.nan)
    resampled = np.full((weights.shape[0], *values.shape), np.nan)
    # the full test set (weights of one) as a first row: one pass per run gives both
    full_then_resampled = np.vstack([np.ones((1, weights.shape[1])), weights])
    for e, seeds in enumerate(runs):
        for s, run in enumerate(seeds):
            record = run.get("ap_matches")
            if record is None:
                raise ValueError(f"experiment {run['experiment']}, seed {run['seed']}, test set {run['test_set']}: "
                                 "the metrics file has no ap_matches (written before mAP had intervals): "
                                 "evaluate it again")
            matches = ApMatches.from_json(record)
            if list(matches.image_ids) != list(run["per_image"]["image_id"]):
                raise ValueError(f"experiment {run['experiment']}, seed {run['seed']}: ap_matches and per-image "
                                 "counts list the images in different orders")
            rows = 100.0 * resampled_map50(matches, full_then_resampled)
            values[e, s], resampled[:, e, s] = rows[0], rows[1:]
    return values, resampled


def smallest_real_row(experiments: Sequence[Experiment], reference: Experiment) -> Experiment | None:
    """The plain real-only row with the fewest real images, fewer than the reference's: what the
    reference must separate from for its comparisons to mean anything (assay sensitivity)."""
    rows = [e for e in experiments if e.is_plain and e.n_synthetic == 0 and not e.uses_synthetic
            and 0 < e.n_real < reference.n_real and e.number != reference.number]
    return min(rows, key=lambda e: (e.n_real, e.number)) if rows else None


# ------------------------------------------------------------------ the comparisons


@dataclass(frozen=True)
class Sensitivity:
    """Whether the reference separates from its smallest real-only row on a test set and metric."""

    ok: bool
    reason: str
    effect: Estimate | None  # reference - smallest real row, oriented (positive: the reference better)


def sensitivity(study: RunsOnTestSet, metric: str, reference: Experiment, smallest: Experiment | None) -> Sensitivity:
    """Assay sensitivity of one test set and metric (module docstring)."""
    ref_tp = float(np.nanmean(study.values["TP"][study.index(reference.number)]))
    if not np.isfinite(ref_tp) or ref_tp < FLOOR_TP_PCT:
        return Sensitivity(False, f"the reference reads at the floor (TP {ref_tp:.1f} %): nothing can be worse", None)
    if smallest is None:
        return Sensitivity(True, "not assessed: no real-only row with fewer real images than the reference", None)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    effect = study.estimate(metric, [reference.number, smallest.number], lambda y: sign * (y[:, 0] - y[:, 1]))
    if not np.isfinite(effect.lo):
        return Sensitivity(False, f"no interval for the real-data effect (experiment {smallest.number})", effect)
    if effect.lo <= 0:
        return Sensitivity(False, (f"the reference does not separate from experiment {smallest.number} "
                                   f"({smallest.n_real} real images): effect {effect.value:+.2f} "
                                   f"[{effect.lo:+.2f}, {effect.hi:+.2f}] points"), effect)
    return Sensitivity(True, "", effect)


def _margin(metric: str, evaluation: Mapping, sens: Sensitivity) -> tuple[float, str]:
    """(margin, its source) of one metric on one test set; NaN where there is none."""
    fraction = evaluation.get("margin_fraction")
    if fraction is not None:
        if sens.effect is not None and sens.ok and sens.effect.value > 0:
            return float(fraction) * sens.effect.value, "fraction of the real-data effect"
        if sens.effect is None and sens.ok and metric in evaluation["margins"]:
            return float(evaluation["margins"][metric]), "absolute (no real-only row to measure the effect)"
        return float("nan"), ""
    if metric in evaluation["margins"]:
        return float(evaluation["margins"][metric]), "absolute"
    return float("nan"), ""


def comparison_row(study: RunsOnTestSet, metric: str, experiment: Experiment, reference: Experiment,
                   margin: float, margin_source: str, sens: Sensitivity) -> dict:
    """One row of comparisons.csv (before the plan's adjustment)."""
    est = study.estimate(metric, [experiment.number, reference.number], difference)
    lower = metric in LOWER_IS_BETTER
    per_seed = np.asarray([v for v in est.per_seed if np.isfinite(v)])
    reason = ""
    if metric in MIRRORS:
        row_verdict, reason = "no verdict", f"{metric} mirrors {MIRRORS[metric]}"
    elif metric == COMPANION:
        row_verdict, reason = "no verdict", "the threshold-free companion of the primary endpoint: an interval only"
    elif not np.isfinite(est.value):
        row_verdict, reason = "no verdict", f"{metric} is undefined on this test set"
    elif not sens.ok:
        row_verdict, reason = "no verdict", sens.reason
    elif not np.isfinite(margin):
        row_verdict, reason = "no verdict", f"no margin for {metric}"
    else:
        row_verdict = verdict(est.lo, est.hi, margin, lower)
    tested = row_verdict != "no verdict" and np.isfinite(est.lo)
    # Oriented tests: H0 "worse by the margin or more", and for equivalence also "better by it or more".
    p_ni = est.one_sided_p(-margin, greater=True) if not lower else est.one_sided_p(margin, greater=False)
    p_upper = est.one_sided_p(margin, greater=False) if not lower else est.one_sided_p(-margin, greater=True)
    p_zero = 2.0 * min(est.one_sided_p(0.0, True), est.one_sided_p(0.0, False))
    tost = max(p_ni, p_upper) if tested else float("nan")
    value = study.values[metric][study.index(experiment.number)]
    reference_value = study.values[metric][study.index(reference.number)]
    effect = sens.effect
    return {
        "experiment": experiment.number,
        "reference": reference.number,
        "test_set": study.test_set,
        "metric": metric,
        "difference": est.value,
        "lo": est.lo,
        "hi": est.hi,
        "margin": margin,
        "verdict": row_verdict,
        "better": "lower" if lower else "higher",
        "role": "secondary" if tested else "descriptive",
        "reason": reason,
        "p_noninferiority": p_ni if tested else float("nan"),
        "p_adjusted": float("nan"),
        "verdict_adjusted": row_verdict,
        "equivalent": bool(tested and tost < ALPHA),
        "tost_p": tost,
        "p_value": min(1.0, p_zero) if np.isfinite(p_zero) else float("nan"),
        "margin_source": margin_source,
        "real_effect": effect.value if effect is not None else float("nan"),
        "real_effect_lo": effect.lo if effect is not None else float("nan"),
        "real_effect_hi": effect.hi if effect is not None else float("nan"),
        "se": est.se,
        "df": est.df,
        "var_billets": est.var_billets,
        "var_seeds": est.var_seeds,
        "covers": est.covers,
        "mc_error": est.mc_error,
        "n_seeds": est.n_seeds,
        "n_billets": study.n_billets,
        "value": float(np.nanmean(value)) if np.isfinite(value).any() else float("nan"),
        "reference_value": float(np.nanmean(reference_value)) if np.isfinite(reference_value).any() else float("nan"),
        "synthetic_pct": experiment.synthetic_pct,
        "n_images": experiment.n_images,
        "real_images": experiment.n_real,
        "synthetic_images": experiment.n_synthetic,
        "reference_pct": reference.synthetic_pct,
        "on_curve": bool(experiment.is_plain and experiment.n_images == reference.n_images),
        "difference_seed_sd": float(per_seed.std(ddof=1)) if per_seed.size > 1 else float("nan"),
        "difference_seed_min": float(per_seed.min()) if per_seed.size else float("nan"),
        "difference_seed_max": float(per_seed.max()) if per_seed.size else float("nan"),
        "label": experiment.label,
    }


def apply_plan(table: pd.DataFrame, primary: Mapping) -> pd.DataFrame:
    """The pre-stated plan (module docstring): the primary endpoint's curve rows in a fixed
    sequence of growing synthetic share, Holm over every other row with a verdict."""
    table = table.copy()
    is_primary = ((table["metric"] == primary["metric"]) & (table["test_set"] == int(primary["test_set"]))
                  & table["on_curve"].astype(bool) & (table["verdict"] != "no verdict"))
    table.loc[is_primary, "role"] = "primary"
    stopped_at = None
    for index in table[is_primary].sort_values("synthetic_pct", kind="stable").index:
        if stopped_at is not None:
            table.loc[index, "verdict_adjusted"] = "not tested"
            table.loc[index, "reason"] = f"the primary sequence stopped at {stopped_at:g} % synthetic"
        elif table.loc[index, "verdict"] not in ACCEPTED:
            stopped_at = float(table.loc[index, "synthetic_pct"])
    secondary = table["role"] == "secondary"
    table.loc[secondary, "p_adjusted"] = holm(table.loc[secondary, "p_noninferiority"].to_numpy())
    lose = secondary & table["verdict"].isin(ACCEPTED) & ~(table["p_adjusted"] < ALPHA)
    table.loc[lose, "verdict_adjusted"] = "inconclusive"
    table.loc[lose, "reason"] = "not non-inferior after Holm's adjustment over the secondary comparisons"
    return table


def comparison_table(
    metrics_paths: list[str | os.PathLike],
    experiments: Sequence[Experiment],
    evaluation: Mapping,
    root_seed: int,
    study: Mapping[int, RunsOnTestSet] | None = None,
) -> pd.DataFrame:
    """Every experiment of Table 1 (`billetjax.experiments.table1`) but the reference against the
    reference, on every test set the metrics files cover: rows by test set, experiment, then
    metric (`METRICS` order), under the plan of `evaluation` (the validated section:
    reference_experiment, margins, margin_fraction, primary, bootstrap_samples)."""
    rows_of_table1 = {e.number: e for e in experiments}
    number = int(evaluation["reference_experiment"])
    if number not in rows_of_table1:
        raise ValueError(f"evaluation.reference_experiment = {number}, but experiments.sets has "
                         f"{len(rows_of_table1)} rows")
    reference = rows_of_table1[number]
    if study is None:
        study = load_study(metrics_paths, experiments, int(evaluation["bootstrap_samples"]), root_seed,
                           map_test_sets={int(evaluation["primary"]["test_set"])})
    smallest = smallest_real_row(experiments, reference)
    rows = []
    for test_set, runs in study.items():
        metrics = [m for m in METRICS if m in runs.values and np.isfinite(runs.values[m]).any()]
        for metric in metrics:
            sens = sensitivity(runs, metric, reference, smallest)
            margin, source = _margin(metric, evaluation, sens)
            for experiment in experiments:
                if experiment.number != reference.number:
                    rows.append(comparison_row(runs, metric, experiment, reference, margin, source, sens))
    table = pd.DataFrame(rows, columns=COLUMNS + EXTRA_COLUMNS)
    if not table.empty:
        table = table.sort_values(["test_set", "experiment"], kind="stable").reset_index(drop=True)
        table = apply_plan(table, evaluation["primary"])
        worst = float(np.nanmax(table["mc_error"])) if table["mc_error"].notna().any() else 0.0
        if worst > 0.05:
            logger.warning("a bound's Monte-Carlo error reaches %.3f points: raise evaluation.bootstrap_samples "
                           "(now %d)", worst, int(evaluation["bootstrap_samples"]))
    logger.info("experiment - reference %d, 95 %% over billets and seeds:\n%s", number,
                table[COLUMNS + ["role", "verdict_adjusted"]].to_string(
                    index=False, float_format=lambda v: f"{v:.2f}"))
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


def largest_accepted_share(curve: pd.DataFrame, column: str = "verdict_adjusted") -> float | None:
    """The largest synthetic share X such that every experiment of the curve with a share up to X
    is non-inferior or superior (in `column`); None if the smallest share already fails.

    curve: the comparison rows of one test set and metric with `on_curve` true (the reference's
    number of training images; the reference itself has no row), with `synthetic_pct` and
    the verdict column. "Up to X %" is read literally: a larger share that passes after a smaller
    one failed does not count.
    """
    accepted = None
    for share, group in curve.sort_values("synthetic_pct", kind="stable").groupby("synthetic_pct", sort=True):
        if not group[column].isin(ACCEPTED).all():
            break
        accepted = float(share)
    return accepted


def _test_set_label(test_set: int, names: Mapping[int, str]) -> str:
    return f"test set {int(test_set)}" + (f" ({names[int(test_set)]})" if int(test_set) in names else "")


def replacement_summary(
    table: pd.DataFrame,
    metric: str,
    reference_pct: float,
    test_set_names: Mapping[int, str] | None = None,
) -> list[str]:
    """One sentence per test set: up to which synthetic share the curve is non-inferior to the
    reference on `metric` under the plan (`verdict_adjusted`), that no share is, or why there
    is no verdict. table: comparisons.csv's rows."""
    names = test_set_names or {}
    reference = int(table["reference"].iloc[0]) if len(table) else None
    against = ("all-real" if reference_pct == 0
               else f"experiment {reference} ({reference_pct:g} % synthetic)")
    sentences = []
    rows = table[(table["metric"] == metric) & table["on_curve"].astype(bool)]
    for test_set in sorted(table["test_set"].unique()):
        curve = rows[rows["test_set"] == test_set]
        label = _test_set_label(test_set, names)
        if curve.empty:
            sentences.append(f"{label[0].upper()}{label[1:]}: no experiment shares the reference's number of "
                             "training images, so there is no curve.")
            continue
        if (curve["verdict"] == "no verdict").all():
            sentences.append(f"No verdict on {label} ({metric}): {curve['reason'].iloc[0]}.")
            continue
        margin = float(curve["margin"].iloc[0])
        role = "primary endpoint" if (curve["role"] == "primary").any() else "secondary, Holm-adjusted"
        qualifier = (f"({metric}, {role}, margin {margin:.2f} points, {curve['margin_source'].iloc[0]}; "
                     f"95 % over {curve['covers'].iloc[0]})")
        share = largest_accepted_share(curve)
        if share is None:
            smallest = float(curve["synthetic_pct"].min())
            first = curve.loc[curve["synthetic_pct"] == smallest, "verdict_adjusted"].iloc[0]
            sentences.append(f"No synthetic share is shown non-inferior to {against} on {label} {qualifier}: "
                             f"already {smallest:g} % synthetic is {first}.")
        else:
            sentences.append(f"Up to {share:g} % synthetic data is non-inferior to {against} on {label} {qualifier}.")
    return sentences


def write_replacement_summary(
    comparisons_csv: str | os.PathLike,
    out_path: str | os.PathLike,
    metric: str,
    experiments: Sequence[Experiment],
    test_set_names: list[str] | None = None,
    primary: Mapping | None = None,
    exchange_csv: str | os.PathLike | None = None,
) -> list[str]:
    """`results/tables/replacement_summary.txt`: the primary endpoint's answer, the exchange
    rate of each row with synthetic images on the primary metric, the summary sentence per test
    set for `metric`, then the largest accepted share of every metric per test set (under the
    plan). Each sentence is also logged."""
    from billetjax.evaluation.exchange import exchange_sentences

    table = pd.read_csv(comparisons_csv)
    rows = {e.number: e for e in experiments}
    reference = int(table["reference"].iloc[0])
    names = {i: n for i, n in enumerate(test_set_names or [], 1)}
    lines: list[str] = []
    if primary is not None:
        lines += [f"Primary endpoint (stated in the config before the study): {primary['metric']} on "
                  f"{_test_set_label(primary['test_set'], names)}."]
        lines += replacement_summary(table[table["test_set"] == int(primary["test_set"])], primary["metric"],
                                     rows[reference].synthetic_pct, names)
    if exchange_csv is not None:
        exchange = pd.read_csv(exchange_csv)
        main = primary["metric"] if primary is not None else metric
        lines += ["", f"What the synthetic images are worth in real ones ({main}; the exchange rate, "
                  "results/tables/exchange_rate.csv):"]
        lines += exchange_sentences(exchange, main, names)
    sentences = replacement_summary(table, metric, rows[reference].synthetic_pct, names)
    lines += ["", f"Every test set on {metric}:"] + sentences
    for sentence in lines:
        if sentence:
            logger.info("%s", sentence)
    grid = {}
    for (test_set, m), curve in table[table["on_curve"].astype(bool)].groupby(["test_set", "metric"]):
        if (curve["verdict"] == "no verdict").all():
            grid.setdefault(m, {})[int(test_set)] = "n/a"
            continue
        share = largest_accepted_share(curve)
        grid.setdefault(m, {})[int(test_set)] = "-" if share is None else f"{share:g}"
    if grid:
        order = [m for m in METRICS if m in grid]
        frame = pd.DataFrame(grid).T.reindex(order)
        frame.columns = [f"test set {c}" for c in frame.columns]
        lines += ["", "Largest synthetic share (%) up to which every experiment of the curve is non-inferior "
                  "to the reference under the plan, per metric and test set ('-': none; 'n/a': no verdict, "
                  "see comparisons.csv's reason):", frame.to_string()]
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return lines
