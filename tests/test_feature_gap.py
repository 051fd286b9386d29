"""The feature-space domain gap's statistics (billetjax.evaluation.feature_gap) on feature sets
whose answer is known: KID of a distribution with itself, precision and recall when the synthetic
set lacks half the variety, and train-on-synthetic accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from billetjax.evaluation.feature_gap import classifier_accuracy, kid, kid_interval, precision_recall

CENTRES = np.random.default_rng(0).normal(0.0, 6.0, (10, 16))  # ten characters, well apart


def clusters(n_per: int, which, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Features of the characters `which` (indices into CENTRES), n_per each, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.asarray(which), n_per)
    return CENTRES[labels] + rng.normal(0.0, spread, (len(labels), CENTRES.shape[1])), labels


def test_kid_by_hand_and_of_a_distribution_with_itself():
    """Two points per side, d = 1: k(x, y) = (xy + 1)^3. Real {0, 1}, synthetic {0, 2}: the real
    pair's kernel is 1, the synthetic pair's 1, the cross mean (1 + 1 + 1 + 27) / 4 = 7.5: KID =
    1 + 1 - 15 = -13. Two samples of one distribution give a KID near 0, a shifted one far above."""
    assert kid(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])) == pytest.approx(-13.0)
    real, _ = clusters(40, range(10), seed=1)
    same, _ = clusters(40, range(10), seed=2)
    shifted = same + 3.0
    assert abs(kid(real, same)) < 0.1 * kid(real, shifted)
    lo, hi = kid_interval(real, shifted, 50, seed=0)
    assert lo < kid(real, shifted) < hi and lo > 0


def test_half_the_variety_scores_lower_recall_not_lower_precision():
    """A synthetic bank that renders only five of the ten characters sits inside the real manifold
    (precision stays as high as the full bank's) but covers only about half of it (recall halves):
    the paper's 'lack of variety', which the full bank does not show."""
    real, _ = clusters(40, range(10), seed=1)
    full, _ = clusters(40, range(10), seed=3)
    half, _ = clusters(80, range(5), seed=4)
    p_full, r_full = precision_recall(real, full)
    p_half, r_half = precision_recall(real, half)
    assert p_half > 0.7 and abs(p_half - p_full) < 0.1  # k = 3 manifolds in 16 dimensions: 0.77 and 0.81
    assert r_full > 0.75 and r_half < 0.6 * r_full  # 0.82 and 0.39


def test_train_on_synthetic_test_on_real():
    """A classifier trained on synthetic characters reads the real ones when the two agree, and
    fails on the characters the synthetic set never showed."""
    real, real_labels = clusters(30, range(10), seed=1)
    full, full_labels = clusters(30, range(10), seed=5)
    half, half_labels = clusters(60, range(5), seed=6)
    assert classifier_accuracy(full, full_labels, real, real_labels, 10) > 0.95
    assert classifier_accuracy(half, half_labels, real, real_labels, 10) == pytest.approx(0.5, abs=0.05)
