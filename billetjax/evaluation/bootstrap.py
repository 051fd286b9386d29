"""Uncertainty: percentile bootstrap over billets, and intervals over training seeds."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

LEVEL = 0.95  # two-sided level of every interval we report


def resample_weights(n_items: int, n_samples: int, seed: int) -> np.ndarray:
    """int64[n_samples, n_items]: how often each item is drawn in each bootstrap resample.

    Drawing with replacement n of n items is a multinomial draw of the counts; as weights the
    resampled sums become one matrix product instead of a gather per resample.
    """
    rng = np.random.default_rng(seed)
    if n_items == 0:
        return np.zeros((n_samples, 0), dtype=np.int64)
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_samples)


def resampled_sums(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """float64[B, ..., k]: per-item counts [..., n, k] summed under each resample's item weights
    [B, n] (`resample_weights`). One matrix product over every leading axis at once: 6x faster
    than the equivalent einsum at 80,000 resamples, and exact (integer counts and weights)."""
    counts = np.asarray(counts, dtype=np.float64)
    items = np.moveaxis(counts, -2, 0)  # [n, ..., k]
    out = np.asarray(weights, dtype=np.float64) @ items.reshape(items.shape[0], -1)
    return out.reshape(out.shape[0], *items.shape[1:])


def bootstrap_intervals(
    counts: np.ndarray,
    metric_fn: Callable[[np.ndarray], dict[str, np.ndarray]],
    n_samples: int,
    seed: int,
    level: float = LEVEL,
) -> dict[str, tuple[float, float]]:
    """Percentile interval of each metric over billets resampled with replacement.

    counts: per-image counts [images, k], or [seeds, images, k] for several models evaluated on
    the same billets: each resample then draws the same billets for every seed and the metric
    is the mean over seeds. metric_fn maps summed counts [..., k] to {name: values [...]}.
    Returns {name: (lo, hi)}; NaN bounds when there is nothing to resample.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim == 2:
        counts = counts[None]
    n_images = counts.shape[1]
    names = list(metric_fn(counts.sum(axis=1)))
    if n_samples <= 0 or n_images == 0:
        return {name: (float("nan"), float("nan")) for name in names}
    weights = resample_weights(n_images, n_samples, seed).astype(np.float64)
    totals = resampled_sums(weights, counts)  # [samples, seeds, k]
    values = metric_fn(totals)
    tail = 100.0 * (1.0 - level) / 2.0
    out = {}
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample stays NaN
            per_sample = np.nanmean(values[name], axis=1)
        finite = per_sample[np.isfinite(per_sample)]
        if finite.size == 0:
            out[name] = (float("nan"), float("nan"))
        else:
            lo, hi = np.percentile(finite, [tail, 100.0 - tail])
            out[name] = (float(lo), float(hi))
    return out


def seed_interval(values: list[float] | np.ndarray, level: float = LEVEL) -> tuple[float, float, float, float]:
    """(mean, sd, lo, hi) over seeds with a Student-t interval; sd and bounds NaN below two seeds."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"),) * 4
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan"), float("nan"), float("nan")
    # Imported here: scipy.special loads in a fraction of scipy.stats' second, paid only with seeds.
    from scipy.special import stdtrit

    sd = float(values.std(ddof=1))
    half = float(stdtrit(values.size - 1, 0.5 + level / 2.0)) * sd / np.sqrt(values.size)
    return mean, sd, mean - half, mean + half
