"""Intervals over billets and seeds (billetjax.evaluation.intervals): coverage in simulated
studies with a known difference, in both regimes a study meets, and Holm's adjustment by hand."""

from __future__ import annotations

import numpy as np
import pytest

from billetjax.evaluation.bootstrap import resample_weights
from billetjax.evaluation.intervals import crossed_interval, holm

MARGIN = 2.0  # points: the true difference sits exactly at the non-inferiority margin


def simulated_study(rng: np.random.Generator, n_seeds: int, seed_shift_sd: float, n_billets: int = 120,
                    n_resamples: int = 150):
    """One study: an experiment whose TP is truly MARGIN points below the reference's.

    Every billet has its own readability (shared by both experiments); a detector reads each
    character with that probability, plus a shift of the whole training (one per experiment and
    seed, sd `seed_shift_sd`); counts are binomial. The population difference is exactly
    -MARGIN points (the shifts have mean 0 and the probabilities stay inside [0, 1])."""
    p = rng.uniform(0.6, 0.95, n_billets)
    g = rng.choice([11, 12], n_billets, p=[0.9, 0.1])
    shift = rng.normal(0.0, seed_shift_sd, (2, n_seeds))
    p_exp = np.clip(p[None] - MARGIN / 100 + shift[0][:, None], 0, 1)
    p_ref = np.clip(p[None] + shift[1][:, None], 0, 1)
    tp = np.stack([rng.binomial(g, p_exp), rng.binomial(g, p_ref)])  # [2, seeds, billets]
    weights = resample_weights(n_billets, n_resamples, int(rng.integers(2**31))).astype(np.float64)
    values = 100.0 * tp.sum(-1) / g.sum()  # [2, seeds]
    resampled = 100.0 * np.einsum("bn,asn->bas", weights, tp) / (weights @ g)[:, None, None]
    return crossed_interval(values, resampled, lambda y: y[:, 0] - y[:, 1], n_billets)


# SEED_SHIFT, a training's shift: sd 3.4 TP points, which with the binomial noise of 120 billets gives the
# default study's largest measured seed spread (sd 3.6 points). At smaller shifts (sd 2 points)
# the positive-part seed estimate is cut to 0 more often and coverage dips to about 92.5 %:
# docs/statistics.md.
@pytest.mark.parametrize("regime, shift_sd", [("noise per billet", 0.0), ("a shift per seed", 0.034)])
def test_coverage_and_false_non_inferiority_at_the_margin(regime, shift_sd):
    """Three seeds, 120 billets, 1,500 simulated studies per regime: the 95 % interval covers the
    true difference 93-97 % of the time, and its lower bound clears the margin (a false
    non-inferiority verdict, nominally 2.5 %) at most 3.5 % of the time. With 'a shift per seed'
    each seed moves a whole training (see SEED_SHIFT above)."""
    rng = np.random.default_rng(0)
    estimates = [simulated_study(rng, n_seeds=3, seed_shift_sd=shift_sd) for _ in range(1500)]
    lo = np.array([e.lo for e in estimates])
    hi = np.array([e.hi for e in estimates])
    coverage = np.mean((lo <= -MARGIN) & (-MARGIN <= hi))
    false_non_inferiority = np.mean(lo > -MARGIN)
    assert 0.93 <= coverage <= 0.97, f"{regime}: coverage {coverage:.3f}"
    assert false_non_inferiority <= 0.035, f"{regime}: false non-inferiority {false_non_inferiority:.3f}"


def test_one_seed_cannot_see_a_seed_shift_and_says_so():
    """With one seed the interval covers billets only (var_seeds NaN, `covers` says it), and where
    seeds shift whole trainings it undercovers: why the default study runs three."""
    rng = np.random.default_rng(1)
    estimates = [simulated_study(rng, n_seeds=1, seed_shift_sd=0.02) for _ in range(400)]
    assert all(np.isnan(e.var_seeds) and e.covers == "billets only (one seed)" for e in estimates)
    coverage = np.mean([e.lo <= -MARGIN <= e.hi for e in estimates])
    assert coverage < 0.85


def test_variance_parts_by_hand():
    """Two seeds whose per-seed differences are 1 and 3 points with no billet variation at all:
    the billet part is 0, the seed part is the variance of the mean of (1, 3), i.e. 2 / 2 = 1, and
    the interval is 2 +- t(1) * 1 (Satterthwaite: the seed part alone, one degree of freedom)."""
    values = np.array([[11.0, 13.0], [10.0, 10.0]])  # [experiments, seeds]
    resampled = np.repeat(values[None], 50, axis=0)
    e = crossed_interval(values, resampled, lambda y: y[:, 0] - y[:, 1], n_billets=30)
    assert e.value == pytest.approx(2.0) and e.var_billets == pytest.approx(0.0)
    assert e.var_seeds == pytest.approx(1.0) and e.df == pytest.approx(1.0)
    assert e.hi - e.value == pytest.approx(12.7062047, rel=1e-6)  # t(1) 97.5 % quantile
    assert e.per_seed == (1.0, 3.0)


def test_holm_by_hand():
    """p = (0.01, 0.04, 0.03, NaN): sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04, made
    monotone: 0.03, 0.06, 0.06; the NaN stays NaN."""
    adjusted = holm(np.array([0.01, 0.04, 0.03, np.nan]))
    np.testing.assert_allclose(adjusted[:3], [0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])


def test_resampled_sums_are_einsums_sums():
    """The one matrix product that sums every run's counts under each resample equals the
    per-axis einsum exactly (integer counts and weights), whatever the leading axes."""
    from billetjax.evaluation.bootstrap import resampled_sums

    weights = resample_weights(50, 200, 1)
    counts = np.random.default_rng(0).integers(0, 9, (3, 4, 50, 7))
    assert np.array_equal(resampled_sums(weights, counts),
                          np.einsum("bn,esnk->besk", weights.astype(float), counts.astype(float)))
    assert np.array_equal(resampled_sums(weights, counts[0, 0]), weights @ counts[0, 0])
