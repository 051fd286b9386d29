"""Table 3 of the paper as CSV: one row per experiment and test set (columns: docs/architecture.md,
"Contracts", "Paths")."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from billetjax.evaluation.bootstrap import resample_weights, resampled_sums, seed_interval
from billetjax.evaluation.evaluate import INTERVAL_METRICS, RUN_COLUMNS, TABLE_METRICS, load_metrics, metrics_from_counts
from billetjax.evaluation.intervals import crossed_interval
from billetjax.experiments import Experiment
from billetjax.seeds import stage_seed

logger = logging.getLogger(__name__)

KEY_COLUMNS = ["experiment", "synthetic_pct", "real_pct", "n_images", "test_set"]
FLOAT_FORMAT = "%.4f"


def experiment_rows(experiments: Sequence[Experiment]) -> list[dict]:
    """Table 1 (`billetjax.experiments.table1`) as rows: experiment k (1-based) with its
    synthetic/real share, image count and label."""
    return [{"experiment": e.number, "synthetic_pct": e.synthetic_pct, "real_pct": e.real_pct, "n_images": e.n_images,
             "label": e.label} for e in experiments]


def testset_row(runs: list[dict], bootstrap_samples: int, bootstrap_seed: int) -> dict:
    """Metrics of one experiment on one test set over its seeds.

    Point values are the mean over seeds; `{m}_lo`/`{m}_hi` the 95 % interval of that mean over
    billets and seeds (`billetjax.evaluation.intervals.crossed_interval`: every seed resampled on
    the same billets, plus the between-seed part; with one seed, billets only), and
    `interval_covers` says which; `{m}_seed_sd`, `_seed_lo`, `_seed_hi` the spread over seeds
    (Student t; empty with one seed).
    """
    image_ids = runs[0]["per_image"]["image_id"]
    for run in runs[1:]:
        if run["per_image"]["image_id"] != image_ids:
            raise ValueError(
                f"experiment {run['experiment']}, test set {run['test_set']}: seeds {runs[0]['seed']} and "
                f"{run['seed']} were evaluated on different images"
            )
        if run["per_image"]["columns"] != list(RUN_COLUMNS):
            raise ValueError(f"metrics of seed {run['seed']} have columns {run['per_image']['columns']}; expected {RUN_COLUMNS}")
    counts = np.stack([np.asarray(r["per_image"]["counts"], dtype=np.float64).reshape(len(image_ids), -1) for r in runs])
    with_pattern = runs[0].get("id_pattern") is not None
    with_lexicon = bool(runs[0].get("lexicon"))
    weights = resample_weights(counts.shape[1], max(int(bootstrap_samples), 0), bootstrap_seed).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = metrics_from_counts(counts.sum(1), with_pattern, with_lexicon)  # metric -> [seeds]
        resampled = metrics_from_counts(resampled_sums(weights, counts), with_pattern, with_lexicon)
    n_billets = int(counts[0, :, RUN_COLUMNS.index("has_gt")].sum())
    intervals = {m: crossed_interval(np.asarray(values[m])[None], np.asarray(resampled[m])[:, None],
                                     lambda y: y[:, 0], n_billets) for m in INTERVAL_METRICS}
    row: dict = {}
    spread: dict = {}
    # the read rates at the configured misread levels (`id_read_{variant}_at_{level}`), as evaluated
    levels = [k for k in runs[0]["metrics"] if k not in TABLE_METRICS and "_at_" in k]
    for metric in (*TABLE_METRICS, *levels):
        mean, sd, lo, hi = seed_interval([r["metrics"][metric] for r in runs])
        row[metric] = mean
        spread.update({f"{metric}_seed_sd": sd, f"{metric}_seed_lo": lo, f"{metric}_seed_hi": hi})
    for metric in INTERVAL_METRICS:
        row[f"{metric}_lo"], row[f"{metric}_hi"] = intervals[metric].lo, intervals[metric].hi
    row["interval_covers"] = intervals["TP"].covers
    row["n_seeds"] = len(runs)
    row.update(spread)
    counts0 = runs[0]["counts"]
    row.update(
        n_billets=counts0["n_billets"],
        n_characters=counts0["n_characters"],
        n_test_images=counts0["n_images"],
    )
    return row


def testset_table(
    metrics_paths: list[str | os.PathLike],
    experiments: Sequence[Experiment],
    test_set: int,
    bootstrap_samples: int,
    root_seed: int,
) -> pd.DataFrame:
    """One row per experiment of Table 1 on one test set, from its metrics files."""
    by_experiment: dict[int, list[dict]] = {}
    for path in metrics_paths:
        run = load_metrics(path)
        if int(run["test_set"]) != int(test_set):
            raise ValueError(f"{path}: metrics of test set {run['test_set']}, expected test set {test_set}")
        by_experiment.setdefault(int(run["experiment"]), []).append(run)
    rows = []
    for spec in experiment_rows(experiments):
        runs = sorted(by_experiment.pop(spec["experiment"], []), key=lambda r: int(r["seed"]))
        if not runs:
            raise ValueError(f"test set {test_set}: no metrics for experiment {spec['experiment']} among the inputs")
        seed = stage_seed(root_seed, "evaluation", "bootstrap", "table", test_set, spec["experiment"])
        label = spec.pop("label")
        rows.append({**spec, "test_set": int(test_set), **testset_row(runs, bootstrap_samples, seed), "label": label})
    if by_experiment:
        raise ValueError(f"test set {test_set}: metrics for experiments {sorted(by_experiment)} not in experiments.sets")
    table = pd.DataFrame(rows)
    logger.info("test set %s:\n%s", test_set, table[KEY_COLUMNS + list(TABLE_METRICS)].to_string(index=False))
    return table


def table3(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """All rows in Table 3's order: by test set, then experiment."""
    table = pd.concat(tables, ignore_index=True)
    return table.sort_values(["test_set", "experiment"], kind="stable").reset_index(drop=True)


def write_table(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """CSV with 4 decimals; NaN (undefined, e.g. a seed spread of one seed) as an empty cell."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format=FLOAT_FORMAT)


def write_testset_table(
    metrics_paths: list[str | os.PathLike],
    out_path: str | os.PathLike,
    experiments: Sequence[Experiment],
    test_set: int,
    bootstrap_samples: int,
    root_seed: int,
) -> pd.DataFrame:
    """`results/tables/testset{n}.csv` from the metrics files of every experiment and seed."""
    table = testset_table(metrics_paths, experiments, test_set, bootstrap_samples, root_seed)
    write_table(out_path, table)
    return table


def write_table3(testset_csvs: list[str | os.PathLike], out_path: str | os.PathLike) -> pd.DataFrame:
    """`results/tables/table3.csv` from the per-test-set tables."""
    table = table3([pd.read_csv(p) for p in testset_csvs])
    write_table(out_path, table)
    return table
