"""Intervals that hold over billets *and* trainings: a billet bootstrap plus a between-seed part.

A study's number (a difference between two experiments, a point read off the dose-response curve)
varies for two reasons a plant cares about:

- **billets**: the test set is a sample of the billets a plant will see;
- **trainings**: a detector's seed, its GAN fit and its synthetic pool (one of each per seed,
  `docs/statistics.md`) shift a whole training up or down.

Every seed's detectors are evaluated on the same billets, so the two are *crossed*. With
per-billet effects (variance σ²_B), per-training shifts (σ²_S) and their interaction (σ²_E), the
mean over S seeds of a statistic on n billets has variance

    Var = σ²_B / n  +  σ²_S / S  +  σ²_E / (n S).

`crossed_interval` estimates the two parts from what it is given:

- `var_billets` = σ²_B / n + σ²_E / (n S): the variance of the seed-mean statistic over billet
  resamples (a paired bootstrap: one draw of billets for every run);
- `var_seeds` = σ²_S / S: the spread of the per-seed statistics on the full test set, which is
  σ²_S + σ²_E / n, less its interaction part σ²_E / n (estimated from the bootstrap too: the mean
  per-seed bootstrap variance minus `var_billets`, times S / (S - 1)), at least 0, over S.

The interval is estimate ± t · sqrt(var_billets + var_seeds) with Satterthwaite's degrees of
freedom for that sum (the billet part on n - 1, the seed part on S - 1). With one seed the seed
part cannot be estimated: the interval covers billets only, and says so (`covers`).

`mc_error` is the Monte-Carlo standard error of a bound from the finite number of resamples
(through the bootstrap variance's own sampling error, sqrt(2 / (B - 1)) of it).
`tests/test_intervals.py` simulates studies in both regimes (noise per billet, a shift per seed)
and checks coverage and the false non-inferiority rate at the margin.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from billetjax.evaluation.bootstrap import LEVEL


@dataclass(frozen=True)
class Estimate:
    """A statistic with its interval and the parts of its variance (see the module docstring)."""

    value: float
    lo: float
    hi: float
    se: float
    df: float
    var_billets: float
    var_seeds: float  # NaN with one seed: not estimable
    mc_error: float
    n_seeds: int
    per_seed: tuple[float, ...]

    @property
    def covers(self) -> str:
        """What the interval's variance includes, in words for the tables."""
        if not np.isfinite(self.lo):
            return "none"
        return "billets and seeds" if np.isfinite(self.var_seeds) else "billets only (one seed)"

    def t_quantile(self, level: float) -> float:
        """The t quantile of a two-sided `level` interval at this estimate's degrees of freedom."""
        return t_quantile(self.df, 0.5 + level / 2.0)

    def one_sided_p(self, threshold: float, greater: bool) -> float:
        """p-value of H0: value <= threshold (greater=True) or value >= threshold, from t(df)."""
        if not (np.isfinite(self.se) and np.isfinite(self.value)):
            return float("nan")
        if self.se == 0:
            beyond = self.value > threshold if greater else self.value < threshold
            return 0.0 if beyond else 1.0
        z = (self.value - threshold) / self.se
        return float(t_sf(self.df, z if greater else -z))


NAN_ESTIMATE_FIELDS = dict(lo=float("nan"), hi=float("nan"), se=float("nan"), df=float("nan"),
                           var_billets=float("nan"), var_seeds=float("nan"), mc_error=float("nan"))


def t_quantile(df: float, p: float) -> float:
    """Student-t quantile (the normal one for infinite df)."""
    from scipy.special import ndtri, stdtrit

    return float(ndtri(p)) if not np.isfinite(df) else float(stdtrit(df, p))


def t_sf(df: float, x: float) -> float:
    """Student-t upper tail P(T > x)."""
    from scipy.special import ndtr, stdtr

    return float(1.0 - ndtr(x)) if not np.isfinite(df) else float(1.0 - stdtr(df, x))


def crossed_interval(
    values: np.ndarray,
    resampled: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    n_billets: int,
    level: float = LEVEL,
) -> Estimate:
    """The statistic of seed-mean values with its interval over billets and seeds.

    values: float[..., seeds] per-seed inputs of the statistic on the full test set (e.g. one
    metric of each compared experiment: [experiments, seeds]); resampled: float[B, ..., seeds],
    the same on B paired billet resamples (every run drawn with the same billets); statistic: maps
    float[M, ...] (a leading batch axis) to float[M]. Resamples where the statistic is not
    finite are left out; without two finite resamples the interval is NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    resampled = np.asarray(resampled, dtype=np.float64)
    n_seeds = values.shape[-1]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(statistic(values.mean(-1)[None])[0])
        per_seed = np.asarray(statistic(np.moveaxis(values, -1, 0)), dtype=np.float64)  # [S]
        boot_mean = np.asarray(statistic(resampled.mean(-1)), dtype=np.float64)  # [B]
        b, rest = resampled.shape[0], resampled.shape[1:-1]
        boot_seed = np.asarray(statistic(np.moveaxis(resampled, -1, 1).reshape(b * n_seeds, *rest)),
                               dtype=np.float64).reshape(b, n_seeds)
    per_seed_t = tuple(float(v) for v in per_seed)
    finite = np.isfinite(boot_mean) & np.isfinite(boot_seed).all(axis=1)
    if not np.isfinite(value) or finite.sum() < 2 or n_billets < 2:
        return Estimate(value=value, n_seeds=n_seeds, per_seed=per_seed_t, **NAN_ESTIMATE_FIELDS)
    boot_mean, boot_seed = boot_mean[finite], boot_seed[finite]
    n_boot = boot_mean.size
    var_billets = float(boot_mean.var(ddof=1))
    terms = [(var_billets, n_billets - 1.0)]
    var_seeds = float("nan")
    if n_seeds >= 2 and np.isfinite(per_seed).all():
        spread = float(per_seed.var(ddof=1))  # sigma_S^2 + sigma_E^2 / n
        within = float(boot_seed.var(axis=0, ddof=1).mean())  # (sigma_B^2 + sigma_E^2) / n
        interaction = max(0.0, (within - var_billets) * n_seeds / (n_seeds - 1.0))  # sigma_E^2 / n
        var_seeds = max(0.0, spread - interaction) / n_seeds
        if var_seeds > 0:
            # Satterthwaite on the seed part as a mean square of S - 1 degrees of freedom, less the
            # interaction (from the bootstrap, on (n - 1)(S - 1)).
            terms += [(spread / n_seeds, n_seeds - 1.0),
                      (-interaction / n_seeds, (n_billets - 1.0) * (n_seeds - 1.0))]
    total = var_billets + (var_seeds if np.isfinite(var_seeds) else 0.0)
    se = float(np.sqrt(total))
    denominator = sum(v * v / d for v, d in terms if d > 0)
    df = float(total * total / denominator) if denominator > 0 else float("inf")
    t = t_quantile(df, 0.5 + level / 2.0)
    mc_error = float(t * var_billets * np.sqrt(2.0 / max(n_boot - 1, 1)) / (2.0 * se)) if se > 0 else 0.0
    return Estimate(value=value, lo=value - t * se, hi=value + t * se, se=se, df=df,
                    var_billets=var_billets, var_seeds=var_seeds, mc_error=mc_error,
                    n_seeds=n_seeds, per_seed=per_seed_t)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), NaN entries left out and kept NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    if idx.size == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out
