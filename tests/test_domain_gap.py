"""The domain gap (billetjax.evaluation.domain_gap): a real-vs-synthetic classifier's held-out AUC is
near 0.5 for two halves of one pool and near 1 for an obviously different pool; the AUC against
a brute-force count; the table from stamp files and its figure."""

import numpy as np
import pandas as pd
import pytest

from billetjax.evaluation.domain_gap import (
    COLUMNS,
    FEATURES,
    domain_gap_auc,
    domain_gap_table,
    stamp_features,
    weighted_auc,
    write_domain_gap_table,
)

SIZE = 32


def stamp_pool(n: int, seed: int, smooth: bool = False) -> np.ndarray:
    """uint8[n, SIZE, SIZE, 3] crops: a grey surface with grain and a dark stamped bar. `smooth`:
    the grain blurred away and the surface a little warmer, as a too-clean renderer might make it."""
    import cv2

    rng = np.random.default_rng(seed)
    base = rng.uniform(90, 150, size=(n, 1, 1, 1))
    grain = rng.normal(0, 10, size=(n, SIZE, SIZE, 1)).repeat(3, -1)
    if smooth:
        grain = np.stack([cv2.GaussianBlur(g, (0, 0), 1.5) for g in grain])
        base = base + np.array([8.0, 0.0, -8.0])
    crops = base + grain
    for i, row in enumerate(rng.integers(8, 20, n)):
        crops[i, row:row + 6, 8:24] -= 40
    return np.clip(crops, 0, 255).astype(np.uint8)


def test_features_shape():
    feats = stamp_features(stamp_pool(5, 0))
    assert feats.shape == (5, len(FEATURES)) and np.isfinite(feats).all()
    with pytest.raises(ValueError, match="RGB crops"):
        stamp_features(np.zeros((2, 8, 8), np.uint8))


def test_weighted_auc_against_brute_force():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=40).round(1)  # ties
    labels = rng.integers(0, 2, 40)
    weights = rng.integers(0, 3, size=(4, 40)).astype(float)
    got = weighted_auc(scores, labels, weights)
    for row, value in zip(weights, got):
        num = den = 0.0
        for i in np.flatnonzero(labels == 1):
            for j in np.flatnonzero(labels == 0):
                w = row[i] * row[j]
                num += w * ((scores[i] > scores[j]) + 0.5 * (scores[i] == scores[j]))
                den += w
        assert value == pytest.approx(num / den)


def test_same_pool_is_indistinguishable():
    pool = stamp_pool(400, seed=1)
    result = domain_gap_auc(pool[:200], pool[200:], folds=5, l2=1.0, n_samples=500, seed=0)
    assert abs(result["auc"] - 0.5) < 0.08
    assert result["lo"] < 0.5 < result["hi"]
    assert (result["n_real"], result["n_synthetic"]) == (200, 200)


def test_different_pool_is_separable():
    result = domain_gap_auc(stamp_pool(150, seed=1), stamp_pool(150, seed=2, smooth=True), folds=5, l2=1.0,
                            n_samples=500, seed=0)
    assert result["auc"] > 0.97 and result["lo"] > 0.9


def test_too_few_stamps_are_refused():
    with pytest.raises(ValueError, match="folds = 5"):
        domain_gap_auc(stamp_pool(3, 0), stamp_pool(20, 1), folds=5, l2=1.0, n_samples=0, seed=0)


@pytest.fixture(scope="module")
def stamp_files(tmp_path_factory):
    """Real stamp pairs (train, val) and banks as the workflow writes them: two GAN checkpoints
    (the first like the real stamps, the second too smooth) and a classic bank; a quarter of each
    bank cut to partially visible (left out of the comparison)."""
    folder = tmp_path_factory.mktemp("stamps")
    real = stamp_pool(160, seed=10)
    for split, part in (("train", real[:120]), ("val", real[120:])):
        np.savez_compressed(folder / f"{split}.npz", images=part, masks=np.zeros(part.shape[:3], np.uint8),
                            labels=np.array(["1"] * len(part)))
    banks = {}
    for name, images in (("step10", stamp_pool(120, seed=11)), ("step20", stamp_pool(120, seed=12, smooth=True)),
                         ("classic", stamp_pool(200, seed=13, smooth=True))):
        partial = np.arange(len(images)) % 4 == 0
        np.savez_compressed(folder / f"stamps_{name}.npz", images=images, partial=partial,
                            labels=np.array(["1"] * len(images)))
        banks[name] = folder / f"stamps_{name}.npz"
    return folder, banks


SETTINGS = {"folds": 5, "max_per_class": 100, "l2": 1.0}


def test_domain_gap_table(stamp_files):
    folder, banks = stamp_files
    table = write_domain_gap_table(folder / "domain_gap.csv", [folder / "train.npz", folder / "val.npz"],
                                   {10: banks["step10"], 20: banks["step20"]}, banks["classic"], SETTINGS,
                                   n_samples=200, root_seed=7, sources=["gan"])
    read = pd.read_csv(folder / "domain_gap.csv")
    assert list(read.columns) == COLUMNS
    assert list(read["bank"]) == ["gan step 10", "gan step 20", "gan, all checkpoints", "classic"]
    assert list(read["used_by_pool"]) == [False, False, True, False]
    assert list(read["n_real"]) == [100] * 4  # 160 real stamps, at most max_per_class
    assert list(read["n_synthetic"]) == [90, 90, 100, 100]  # whole stamps only: 3/4 of 120; capped
    by_bank = table.set_index("bank")
    assert abs(by_bank.loc["gan step 10", "auc"] - 0.5) < 0.15
    assert by_bank.loc["gan step 20", "auc"] > 0.95 and by_bank.loc["classic", "auc"] > 0.95
    assert (read["lo"] <= read["auc"]).all() and (read["auc"] <= read["hi"]).all()
    # Only the classic bank, for a classic study.
    classic = domain_gap_table([folder / "train.npz"], {}, banks["classic"], SETTINGS, 0, 7, ["classic"])
    assert list(classic["bank"]) == ["classic"] and classic["used_by_pool"].tolist() == [True]
    both = domain_gap_table([folder / "train.npz"], {10: banks["step10"]}, banks["classic"], SETTINGS, 0, 7,
                            ["classic", "gan"])
    assert both["used_by_pool"].tolist() == [True, True]  # a study whose rows use both renderers
    assert np.isnan(classic["lo"].iloc[0])


def test_domain_gap_figure(stamp_files, tmp_path):
    from billetjax.evaluation.figures import domain_gap_figure

    folder, banks = stamp_files
    write_domain_gap_table(tmp_path / "gap.csv", [folder / "train.npz"], {10: banks["step10"], 20: banks["step20"]},
                           banks["classic"], SETTINGS, 100, 7, ["gan"])
    comparisons = pd.DataFrame([{"experiment": 5, "reference": 1, "test_set": t, "metric": "TP",
                                 "difference": -5.0 * t, "lo": -5.0 * t - 2, "hi": -5.0 * t + 2, "margin": 2.0,
                                 "verdict": "inferior", "better": "higher", "synthetic_pct": 100, "on_curve": True}
                                for t in (1, 2)])
    comparisons.to_csv(tmp_path / "comparisons.csv", index=False)
    for name, csv in (("with_drop", tmp_path / "comparisons.csv"), ("alone", None)):
        domain_gap_figure(tmp_path / "gap.csv", tmp_path / f"{name}.png", csv, "TP", ["all", "well"])
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
