"""A plant's metrics of whole-ID reading (docs/id-reading.md): read, misread and reject rates.

Every billet with a ground-truth ID ends in one of three outcomes at a confidence threshold τ:
**read** (a reading with confidence >= τ that equals the ID), **misread** (a reading with
confidence >= τ that does not: a wrong ID handed on as read) or **reject** (no reading, or one
below τ: the billet goes to a human). Rates are percentages of the billets with an ID.

Sweeping τ from above the highest confidence down to the lowest traces the read–misread curve;
the read rate at a misread rate of at most x is the highest read rate on the curve whose misread
rate is <= x (the threshold that gives it is chosen on the same billets, as a plant tunes its
threshold on a labelled sample: an optimistic reading of a small set).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def outcomes(correct: np.ndarray, confidence: np.ndarray, threshold: float) -> np.ndarray:
    """int64[billets, 3]: (read, misread, reject) one-hot per billet at confidence threshold τ.

    correct: bool per billet (its reading equals the ID); confidence: per billet, NaN where there
    is no reading (always a reject)."""
    correct = np.asarray(correct, dtype=bool)
    confidence = np.asarray(confidence, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        accepted = np.isfinite(confidence) & (confidence >= threshold)
    return np.stack([accepted & correct, accepted & ~correct, ~accepted], axis=1).astype(np.int64)


def read_misread_curve(correct: np.ndarray, confidence: np.ndarray) -> pd.DataFrame:
    """The curve over every threshold: columns `threshold`, `read`, `misread`, `reject` (percent).

    One point per distinct confidence (billets of equal confidence are accepted together), from
    the strictest (threshold +inf: everything rejected) to the loosest."""
    correct = np.asarray(correct, dtype=bool)
    confidence = np.asarray(confidence, dtype=np.float64)
    n = len(correct)
    if n == 0:
        return pd.DataFrame({"threshold": [np.inf], "read": [np.nan], "misread": [np.nan], "reject": [np.nan]})
    has = np.isfinite(confidence)
    conf, good = confidence[has], correct[has]
    order = np.argsort(-conf, kind="stable")
    conf, good = conf[order], good[order]
    reads, misreads = np.cumsum(good), np.cumsum(~good)
    # the last billet of each run of equal confidences closes a point
    last = np.flatnonzero(np.append(np.diff(conf) != 0, True)) if len(conf) else np.zeros(0, dtype=np.int64)
    thresholds = np.concatenate([[np.inf], conf[last]])
    read = np.concatenate([[0], reads[last]]) * 100.0 / n
    misread = np.concatenate([[0], misreads[last]]) * 100.0 / n
    return pd.DataFrame({"threshold": thresholds, "read": read, "misread": misread, "reject": 100.0 - read - misread})


def read_at_misread(curve: pd.DataFrame, max_misread_pct: float) -> float:
    """The highest read rate on the curve at a misread rate <= max_misread_pct (percent)."""
    ok = curve["misread"] <= max_misread_pct + 1e-9
    return float(curve.loc[ok, "read"].max()) if ok.any() and curve["read"].notna().any() else float("nan")


def level_name(variant: str, max_misread_pct: float) -> str:
    """Metric name of the read rate at a misread level, e.g. `id_read_pattern_at_0.5`."""
    return f"id_read_{variant}_at_{max_misread_pct:g}"


def curve_table(runs: list[dict]) -> pd.DataFrame:
    """The read–misread curve of every experiment, test set and decoder from metrics files
    (`billetjax.evaluation.evaluate.load_metrics`), the seeds of a run pooled (each billet once per
    seed). Columns: experiment, test_set, variant, n_readings, threshold, read, misread, reject;
    a decoder the runs did not use (no pattern, no lexicon) has no rows."""
    from billetjax.evaluation.billet_id import VARIANTS

    groups: dict[tuple[int, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((int(run["experiment"]), int(run["test_set"])), []).append(run)
    frames = []
    for (experiment, test_set), group in sorted(groups.items()):
        records = [r for run in group for r in run["billet_ids"] if r["billet_id"]]
        for v in VARIANTS:
            present = {"plain": True, "pattern": group[0].get("id_pattern") is not None,
                       "lexicon": bool(group[0].get("lexicon"))}[v]
            if not present:
                continue
            correct = np.array([r[f"read_{v}"] == r["billet_id"] for r in records], dtype=bool)
            confidence = np.array(
                [r[f"confidence_{v}"] if r[f"read_{v}"] is not None and r[f"confidence_{v}"] is not None else np.nan
                 for r in records], dtype=np.float64)
            curve = read_misread_curve(correct, confidence)
            curve.insert(0, "n_readings", len(records))
            curve.insert(0, "variant", v)
            curve.insert(0, "test_set", test_set)
            curve.insert(0, "experiment", experiment)
            frames.append(curve)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["experiment", "test_set", "variant", "n_readings", "threshold", "read", "misread", "reject"])
