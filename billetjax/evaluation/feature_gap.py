"""The domain gap where it matters: embedded characters in the all-real detector's feature space.

`billetjax.evaluation.domain_gap` compares stamp crops before embedding with image statistics; a
linear classifier separates every renderer there (AUC 1.0), so it cannot rank them. This module
measures the characters the detector actually sees, in the representation it learnt: the all-real
reference detector (`evaluation.reference_experiment`, first seed) pools each annotated character's
box from its feature pyramid (RoIAlign) and passes it through its box head's two layers
(`BoxHead.embed`). Real: the characters of the real test pool (none of them trained the detector).
Synthetic: the characters of each synthetic pool, and of each GAN checkpoint's stamps in it.

Per pool (and checkpoint), `results/tables/domain_gap_features.csv` gives:

- **KID** (Bińkowski et al. 2018): the unbiased squared MMD with the kernel (x·y / d + 1)³, ×1000,
  with a 95 % percentile interval over resamples of both sets' characters: 0 = the two feature
  distributions agree;
- **precision** and **recall** (Kynkäänniemi et al. 2019, k = 3): the share of synthetic characters
  inside the real characters' k-NN manifold (realism), and of real characters inside the synthetic
  ones' (variety: the paper's "lack of variety" shows as low recall);
- **tstr_accuracy**: a character classifier (multinomial logistic regression on these features)
  trained on the synthetic characters, tested on the real ones; `trtr_accuracy` is the same
  classifier trained on real characters (cross-fitted), the ceiling it is measured against.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from billetjax import coco as cc
from billetjax.evaluation.bootstrap import LEVEL
from billetjax.seeds import stage_seed

logger = logging.getLogger(__name__)

COLUMNS = ["pool", "method", "fit", "checkpoint", "n_real", "n_synthetic", "kid_x1000", "kid_lo", "kid_hi",
           "precision", "recall", "tstr_accuracy", "trtr_accuracy"]
NEIGHBOURS = 3  # k of the k-NN manifolds (Kynkäänniemi et al. 2019)
KID_RESAMPLES = 200
FLOAT_FORMAT = "%.4f"


# ----------------------------------------------------------------------------- the statistics


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Unbiased squared MMD between two feature sets with the cubic polynomial kernel (KID)."""
    x, y = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    return _kid_of_kernels(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y))


def _kid_of_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid_interval(real: np.ndarray, synthetic: np.ndarray, n_resamples: int, seed: int,
                 level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of KID over resamples (with replacement) of both sets' characters;
    a resample drops repeated draws of one character (the unbiased estimate needs distinct items).
    The kernels are computed once and each resample reads its rows and columns from them."""
    x, y = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        i = np.unique(rng.integers(0, len(x), len(x)))
        j = np.unique(rng.integers(0, len(y), len(y)))
        values.append(_kid_of_kernels(kxx[np.ix_(i, i)], kyy[np.ix_(j, j)], kxy[np.ix_(i, j)])
                      if len(i) > 1 and len(j) > 1 else float("nan"))
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.nanpercentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row of x to its k-th nearest other row."""
    d = np.sqrt(np.maximum(_squared_distances(x, x), 0.0))
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T


def precision_recall(real: np.ndarray, synthetic: np.ndarray, k: int = NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): the share of synthetic items
    within some real item's k-NN ball, and of real items within some synthetic item's."""
    x, y = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    if len(x) <= k or len(y) <= k:
        return float("nan"), float("nan")
    rx, ry = _knn_radii(x, k), _knn_radii(y, k)
    d = np.sqrt(np.maximum(_squared_distances(y, x), 0.0))  # [synthetic, real]
    precision = float(np.mean((d <= rx[None, :]).any(axis=1)))
    recall = float(np.mean((d <= ry[:, None]).any(axis=0)))
    return precision, recall


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1.0) -> np.ndarray:
    """Weights [d + 1, classes] of a multinomial logistic regression (L2 on the weights, not the
    bias), fitted with L-BFGS on mean cross-entropy."""
    x1 = np.hstack([np.asarray(x, np.float64), np.ones((len(x), 1))])
    n, d1 = x1.shape
    onehot = np.eye(n_classes)[y]
    penalty = np.ones((d1, 1))
    penalty[-1] = 0.0

    def loss(theta):
        w = theta.reshape(d1, n_classes)
        z = x1 @ w
        z -= z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        value = -(onehot * logp).sum() / n + 0.5 * l2 / n * ((w * penalty) ** 2).sum()
        grad = x1.T @ (np.exp(logp) - onehot) / n + l2 / n * w * penalty
        return value, grad.ravel()

    result = minimize(loss, np.zeros(d1 * n_classes), jac=True, method="L-BFGS-B", options={"maxiter": 300})
    return result.x.reshape(d1, n_classes)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return [(a - mean) / std for a in (train, *others)]


def classifier_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                        n_classes: int) -> float:
    """Accuracy on (test_x, test_y) of the softmax classifier fitted on (train_x, train_y)."""
    if len(train_x) == 0 or len(test_x) == 0:
        return float("nan")
    tr, te = _standardise(np.asarray(train_x, np.float64), np.asarray(test_x, np.float64))
    w = fit_softmax(tr, np.asarray(train_y), n_classes)
    predicted = np.argmax(np.hstack([te, np.ones((len(te), 1))]) @ w, axis=1)
    return float(np.mean(predicted == np.asarray(test_y)))


def cross_fitted_accuracy(x: np.ndarray, y: np.ndarray, n_classes: int, folds: int, seed: int) -> float:
    """Accuracy of the softmax classifier on data it did not see, over `folds` folds."""
    order = np.random.default_rng(seed).permutation(len(x))
    hits = 0
    for part in np.array_split(order, folds):
        rest = np.setdiff1d(order, part)
        hits += classifier_accuracy(x[rest], y[rest], x[part], y[part], n_classes) * len(part)
    return float(hits / len(x))


# ----------------------------------------------------------------------------- the features


class CharacterFeatures:
    """The detector's box-head representation of annotated characters: call it on a COCO file for
    (features float32[N, head_width], labels int[N] (0-based, the detector's category order), the N
    annotations). One compiled program serves every file of the same image size and box count."""

    def __init__(self, params_path: str | os.PathLike, batch_size: int = 8):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from billetjax.detector.predict import load_detector
        from billetjax.detector.roi_heads import pool_rois

        self.spec, graphdef, self.params = load_detector(params_path)
        self.batch_size = batch_size
        spec = self.spec

        @jax.jit
        def embed(params, images, boxes):
            model = nnx.merge(graphdef, params)
            pooled = pool_rois(model.features(images), boxes, spec.model.pool_size, spec.roi.sampling_ratio)
            return model.box_head.embed(pooled).astype(jnp.float32).reshape(boxes.shape[0], boxes.shape[1], -1)

        self._embed = embed

    @property
    def n_classes(self) -> int:
        return len(self.spec.category_ids)

    def __call__(self, json_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        import jax

        from billetjax.detector import data as det_data
        from billetjax.detector.predict import padded_batches

        coco = cc.load(json_path, require_extras=False)
        by_image = cc.annotations_by_image(coco)
        annotations = [[a for a in by_image[int(r["id"])] if a["bbox"][2] > 0 and a["bbox"][3] > 0]
                       for r in coco["images"]]
        most = max((len(a) for a in annotations), default=1) or 1
        data = det_data.load_detection_set(json_path, max_boxes=most, category_ids=self.spec.category_ids)
        features = [np.asarray(jax.device_get(self._embed(self.params, data.images[idx], data.boxes[idx])))[:n]
                    for idx, n in padded_batches(len(data), self.batch_size)]
        features = np.concatenate(features)  # [images, most, width]
        return features[data.valid], data.labels[data.valid] - 1, [a for anns in annotations for a in anns]


# ----------------------------------------------------------------------------- the table


def _subsample(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, limit, replace=False)) if n > limit else np.arange(n)


def gap_row(real: np.ndarray, real_labels: np.ndarray, synthetic: np.ndarray, synthetic_labels: np.ndarray,
            n_classes: int, seed: int, trtr: float) -> dict:
    """The statistics of one synthetic feature set against the real one."""
    lo, hi = kid_interval(real, synthetic, KID_RESAMPLES, seed)
    precision, recall = precision_recall(real, synthetic)
    return {
        "n_real": len(real), "n_synthetic": len(synthetic),
        "kid_x1000": 1000.0 * kid(real, synthetic), "kid_lo": 1000.0 * lo, "kid_hi": 1000.0 * hi,
        "precision": precision, "recall": recall,
        "tstr_accuracy": classifier_accuracy(synthetic, synthetic_labels, real, real_labels, n_classes),
        "trtr_accuracy": trtr,
    }


def feature_gap_table(params_path: str | os.PathLike, real_json: str | os.PathLike,
                      pools: Mapping[str, str | os.PathLike], evaluation: Mapping, root_seed: int) -> pd.DataFrame:
    """One row per synthetic pool (`pools`: name "method/fit" -> pool JSON) and, for GAN pools, per
    generator checkpoint of its stamps. evaluation: the `domain_gap` settings (max_per_class, folds)."""
    settings = evaluation["domain_gap"]
    limit = int(settings["max_per_class"])
    rng = np.random.default_rng(stage_seed(root_seed, "evaluation", "feature-gap"))
    extract = CharacterFeatures(params_path)
    n_classes = extract.n_classes
    real, real_labels, _ = extract(real_json)
    pick = _subsample(len(real), limit, rng)
    real, real_labels = real[pick], real_labels[pick]
    trtr = cross_fitted_accuracy(real, real_labels, n_classes, int(settings["folds"]),
                                 stage_seed(root_seed, "evaluation", "feature-gap", "trtr"))
    rows = []
    for name, path in pools.items():
        method, fit = name.split("/")
        synthetic, labels, annotations = extract(path)
        checkpoints = np.array([int(a.get("stamp_checkpoint", 0)) for a in annotations])
        groups = [("all", np.ones(len(synthetic), bool))]
        if method == "gan":
            groups += [(str(c), checkpoints == c) for c in sorted(set(checkpoints.tolist())) if c]
        for checkpoint, mask in groups:
            chosen = np.flatnonzero(mask)[_subsample(int(mask.sum()), limit, rng)]
            row = gap_row(real, real_labels, synthetic[chosen], labels[chosen], n_classes,
                          stage_seed(root_seed, "evaluation", "feature-gap", name, checkpoint), trtr)
            rows.append({"pool": str(path), "method": method, "fit": int(fit), "checkpoint": checkpoint, **row})
            logger.info("%s, checkpoint %s: KID x1000 %.2f [%.2f, %.2f], precision %.2f, recall %.2f, "
                        "train-synthetic/test-real accuracy %.3f (real/real %.3f)", name, checkpoint,
                        row["kid_x1000"], row["kid_lo"], row["kid_hi"], row["precision"], row["recall"],
                        row["tstr_accuracy"], trtr)
    return pd.DataFrame(rows, columns=COLUMNS)


def write_feature_gap_table(out_path: str | os.PathLike, params_path: str | os.PathLike,
                            real_json: str | os.PathLike, pools: Mapping[str, str | os.PathLike],
                            evaluation: Mapping, root_seed: int) -> pd.DataFrame:
    """`results/tables/domain_gap_features.csv`."""
    table = feature_gap_table(params_path, real_json, pools, evaluation, root_seed)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format=FLOAT_FORMAT)
    return table


def pool_names(paths: Sequence[str]) -> dict[str, str]:
    """"method/fit" -> path for pool paths results/synth/{method}/fit{fit}/pool.json."""
    out = {}
    for path in paths:
        parts = Path(path).parts
        out[f"{parts[-3]}/{parts[-2].removeprefix('fit')}"] = path
    return out
