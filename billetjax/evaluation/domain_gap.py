"""How far synthetic stamps are from real ones: a classifier's held-out AUC at telling them apart.

Real: the stamp crops of `results/data/stamps/{train,val}.npz` (real billets, well or poorly
visible). Synthetic: the whole (not cut to partially visible) stamps of each stamp bank,
`results/synth/gan/stamps_step{ckpt}.npz` per GAN checkpoint, all GAN checkpoints together (what
the GAN pool embeds) and `results/synth/classic/stamps_classic.npz`. Both are RGB crops of the same
size and framing (`synth_stamp_geometry` in rules/common.smk); a bank of another size is resized
to the real crops' size.

The classifier is an L2-regularised logistic regression on `FEATURES`, simple image statistics
(colour, grey-level quantiles, gradient and Laplacian energy, a radial power spectrum),
standardised on the training folds, fitted with scipy's L-BFGS. Every item is scored once while
held out (stratified k-fold cross-fitting, `evaluation.domain_gap.folds`), and the AUC of those
scores (synthetic = positive) is the domain gap: 0.5 = the features cannot tell the two apart,
1.0 = perfectly separable. Its 95 % interval is a percentile bootstrap over the held-out items
(each class resampled on its own, so both keep their size; the fitted models are not refitted).
A linear model on hand-made statistics gives a lower bound on how distinguishable the two are:
a low AUC says that these statistics match, not that no detector could tell.

Why not scikit-learn: a logistic regression is a dozen lines on scipy.optimize, which the project
already depends on; the AUC is the Mann-Whitney statistic.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy.optimize import minimize

from billetjax.evaluation.bootstrap import LEVEL
from billetjax.seeds import stage_seed

logger = logging.getLogger(__name__)

SPECTRUM_BANDS = 8
FEATURES = (
    [f"{c}_{s}" for s in ("mean", "std") for c in "RGB"]
    + ["rg_mean", "gb_mean", "rg_std", "gb_std"]
    + [f"grey_q{q}" for q in (5, 25, 50, 75, 95)]
    + ["grad_mean", "grad_std", "grad_q90", "grad_q99", "lap_abs_mean", "lap_std"]
    + [f"log_power_band{i}" for i in range(SPECTRUM_BANDS)]
)
COLUMNS = ["bank", "method", "checkpoint", "auc", "lo", "hi", "n_real", "n_synthetic", "used_by_pool"]
FLOAT_FORMAT = "%.4f"


def stamp_features(images: np.ndarray) -> np.ndarray:
    """float64[N, len(FEATURES)] image statistics of uint8 RGB crops [N, S, S, 3]."""
    x = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB crops [N, S, S, 3], got shape {x.shape}")
    n = len(x)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    grey = x.mean(-1)
    flat = x.reshape(n, -1, 3)
    feats = [flat.mean(1), flat.std(1)]
    rg, gb = (r - g).reshape(n, -1), (g - b).reshape(n, -1)
    feats.append(np.stack([rg.mean(1), gb.mean(1), rg.std(1), gb.std(1)], 1))
    feats.append(np.percentile(grey.reshape(n, -1), [5, 25, 50, 75, 95], axis=1).T)
    gy, gx = np.gradient(grey, axis=(1, 2))
    grad = np.hypot(gx, gy).reshape(n, -1)
    lap = (grey[:, 1:-1, 1:-1] * 4 - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] - grey[:, 1:-1, :-2]
           - grey[:, 1:-1, 2:]).reshape(n, -1)
    feats.append(np.stack([grad.mean(1), grad.std(1), np.percentile(grad, 90, axis=1),
                           np.percentile(grad, 99, axis=1), np.abs(lap).mean(1), lap.std(1)], 1))
    feats.append(_radial_log_power(grey))
    return np.concatenate(feats, axis=1).astype(np.float64)


def _radial_log_power(grey: np.ndarray) -> np.ndarray:
    """Mean log power of the (mean-removed) crop in SPECTRUM_BANDS rings of spatial frequency."""
    n, h, w = grey.shape
    power = np.abs(np.fft.rfft2(grey - grey.mean(axis=(1, 2), keepdims=True))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.rfftfreq(w), indexing="ij")
    radius = np.hypot(fy, fx) / 0.5  # 1 = the Nyquist frequency along an axis
    band = np.minimum((radius * SPECTRUM_BANDS).astype(int), SPECTRUM_BANDS - 1).reshape(-1)
    onehot = (band[:, None] == np.arange(SPECTRUM_BANDS)[None]).astype(power.dtype)
    onehot[0] = 0.0  # the (removed) mean
    log_power = np.log(power.reshape(n, -1) + 1e-12)
    return (log_power @ onehot) / onehot.sum(0)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """(weights, bias) minimising mean log-loss + l2 / (2 n) * |weights|^2 (bias unpenalised)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape

    def loss(theta):
        w, c = theta[:d], theta[d]
        z = x @ w + c
        # log(1 + e^z) - y z, stably; its gradient sigmoid(z) - y.
        value = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 / n * (w @ w)
        residual = 0.5 * (1.0 + np.tanh(0.5 * z)) - y
        grad = np.concatenate([x.T @ residual / n + l2 / n * w, [residual.mean()]])
        return value, grad

    result = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return result.x[:d], float(result.x[d])


def cross_fitted_scores(x: np.ndarray, y: np.ndarray, folds: int, l2: float, seed: int) -> np.ndarray:
    """Each item's score from the model fitted on the other folds (stratified k-fold)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for label in (0, 1):
        members = np.flatnonzero(y == label)
        fold[members[rng.permutation(len(members))]] = np.arange(len(members)) % folds
    scores = np.empty(len(y))
    for k in range(folds):
        test, train = fold == k, fold != k
        mean, sd = x[train].mean(0), x[train].std(0)
        sd = np.where(sd > 0, sd, 1.0)
        w, c = fit_logistic((x[train] - mean) / sd, y[train], l2)
        scores[test] = ((x[test] - mean) / sd) @ w + c
    return scores


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC (P(score of a positive > score of a negative), ties count half) under item weights
    [B, n] (bootstrap counts), one per row: the Mann-Whitney statistic, vectorised over rows."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(scores, kind="stable")
    s, pos = np.asarray(scores)[order], np.asarray(labels)[order].astype(bool)
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of equal scores
    p = np.add.reduceat(np.where(pos, w, 0.0), starts, axis=1)
    q = np.add.reduceat(np.where(pos, 0.0, w), starts, axis=1)
    below = np.cumsum(q, axis=1) - q
    with np.errstate(divide="ignore", invalid="ignore"):
        return (p * (below + 0.5 * q)).sum(1) / (p.sum(1) * q.sum(1))


def domain_gap_auc(
    real: np.ndarray,
    synthetic: np.ndarray,
    *,
    folds: int,
    l2: float,
    n_samples: int,
    seed: int,
    level: float = LEVEL,
) -> dict:
    """Held-out AUC of telling `synthetic` crops from `real` ones, with its bootstrap interval.

    real, synthetic: uint8 RGB crops [N, S, S, 3] of one size. Returns {auc, lo, hi, n_real,
    n_synthetic}; NaN bounds without resamples (n_samples 0).
    """
    return auc_of_features(stamp_features(real), stamp_features(synthetic), folds, l2, n_samples, seed, level)


def auc_of_features(
    real: np.ndarray,
    synthetic: np.ndarray,
    folds: int,
    l2: float,
    n_samples: int,
    seed: int,
    level: float = LEVEL,
) -> dict:
    """`domain_gap_auc` on precomputed `stamp_features` [N, len(FEATURES)] of each class."""
    if len(real) < folds or len(synthetic) < folds:
        raise ValueError(f"domain gap: {len(real)} real and {len(synthetic)} synthetic stamps, "
                         f"each class needs at least evaluation.domain_gap.folds = {folds}")
    x = np.concatenate([real, synthetic])
    y = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
    fit_seed, boot_seed = (int(s) for s in np.random.SeedSequence(int(seed)).generate_state(2))
    scores = cross_fitted_scores(x, y, folds, l2, fit_seed)
    auc = float(weighted_auc(scores, y, np.ones((1, len(y))))[0])
    lo = hi = float("nan")
    if n_samples > 0:
        rng = np.random.default_rng(boot_seed)
        weights = np.zeros((n_samples, len(y)))
        for label in (0, 1):
            members = np.flatnonzero(y == label)
            weights[:, members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)),
                                                  size=n_samples)
        tail = 100.0 * (1.0 - level) / 2.0
        lo, hi = (float(v) for v in np.percentile(weighted_auc(scores, y, weights), [tail, 100.0 - tail]))
    return {"auc": auc, "lo": lo, "hi": hi, "n_real": len(real), "n_synthetic": len(synthetic)}


def _subsample(images: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """At most `limit` items, drawn without replacement in their order."""
    if len(images) <= limit:
        return images
    return images[np.sort(rng.choice(len(images), size=limit, replace=False))]


def _load_crops(path: str | os.PathLike, whole_only: bool, size_px: int | None = None) -> np.ndarray:
    """The `images` of a stamp-pair or stamp-bank npz (banks: only stamps not cut to partial),
    resized to `size_px` where it differs."""
    with np.load(path) as data:
        if "images" not in data:
            raise ValueError(f"{path}: no 'images' array (is it a stamp bank or stamp-pair file?)")
        images = data["images"]
        if whole_only and "partial" in data:
            images = images[~data["partial"].astype(bool)]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: images of shape {images.shape}, expected RGB crops [N, S, S, 3]")
    if size_px is not None and images.shape[1:3] != (size_px, size_px):
        images = np.stack([cv2.resize(im, (size_px, size_px), interpolation=cv2.INTER_AREA) for im in images])
    return images


def domain_gap_table(
    real_paths: list[str | os.PathLike],
    gan_banks: Mapping[int, str | os.PathLike],
    classic_bank: str | os.PathLike | None,
    settings: Mapping,
    n_samples: int,
    root_seed: int,
    sources: Sequence[str],
) -> pd.DataFrame:
    """One row per GAN checkpoint (ascending), one for all GAN checkpoints together (when there are
    several) and one for the classic bank; `used_by_pool` marks the rows of the stamps the study's
    synthetic pools embed (`sources`: the renderers some experiment uses, gan and/or classic). settings: `evaluation.domain_gap` (folds, l2,
    max_per_class)."""
    real = np.concatenate([_load_crops(p, whole_only=False) for p in real_paths])
    size = real.shape[1]
    limit = int(settings["max_per_class"])
    rng = np.random.default_rng(stage_seed(root_seed, "evaluation", "domain_gap", "subsample"))
    # Features once per crop: the pooled GAN row reuses its checkpoints' features.
    real = stamp_features(_subsample(real, limit, rng))
    banks: list[tuple[str, str, int | None, np.ndarray, bool]] = []
    gan = {int(k): stamp_features(_subsample(_load_crops(p, whole_only=True, size_px=size), limit, rng))
           for k, p in sorted(gan_banks.items())}
    for step, features in gan.items():
        banks.append((f"gan step {step}", "gan", step, features, "gan" in sources and len(gan) == 1))
    if len(gan) > 1:
        pooled = _subsample(np.concatenate(list(gan.values())), limit, rng)
        banks.append(("gan, all checkpoints", "gan", None, pooled, "gan" in sources))
    if classic_bank is not None:
        features = stamp_features(_subsample(_load_crops(classic_bank, whole_only=True, size_px=size), limit, rng))
        banks.append(("classic", "classic", None, features, "classic" in sources))
    rows = []
    for label, kind, step, features, used in banks:
        result = auc_of_features(real, features, int(settings["folds"]), float(settings["l2"]), n_samples,
                                 stage_seed(root_seed, "evaluation", "domain_gap", label))
        logger.info("%s: AUC %.3f [%.3f, %.3f] (%d real, %d synthetic stamps)", label, result["auc"],
                    result["lo"], result["hi"], result["n_real"], result["n_synthetic"])
        rows.append({"bank": label, "method": kind, "checkpoint": step, **result, "used_by_pool": used})
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["checkpoint"] = table["checkpoint"].astype("Int64")
    return table


def write_domain_gap_table(out_path: str | os.PathLike, *args, **kwargs) -> pd.DataFrame:
    """`results/tables/domain_gap.csv` (arguments: `domain_gap_table`)."""
    table = domain_gap_table(*args, **kwargs)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format=FLOAT_FORMAT)
    return table
