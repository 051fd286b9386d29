"""One model on one test set: detections (COCO results) → a metrics file (the metrics:
docs/architecture.md, "Contracts", "Metrics")."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from billetjax import coco as cc
from billetjax.data.lexicon import load_lexicon
from billetjax.evaluation.billet_id import VARIANTS, IdPattern, read_billets
from billetjax.evaluation.bootstrap import bootstrap_intervals
from billetjax.coco_map import ap_matches, resampled_map50
from billetjax.evaluation.id_metrics import level_name, outcomes, read_at_misread, read_misread_curve
from billetjax.evaluation.metrics import COUNT_COLUMNS, count_matrix, match_detections, percentages
from billetjax.seeds import stage_seed

logger = logging.getLogger(__name__)

# Per-image counts stored in a metrics file: the digit counts plus the billet-ID reading outcome.
# `id_correct{,_pattern,_lexicon}`: the plain, pattern and lexicon decoders' best reading equals the
# ID (no reject option); `id_{read,misread,reject}_{variant}`: the outcome at the operating point
# (`evaluation.id_reading.min_confidence`), one of the three is 1 on every billet with an ID.
ID_OUTCOMES = tuple(f"id_{o}_{v}" for v in VARIANTS for o in ("read", "misread", "reject"))
RUN_COLUMNS = COUNT_COLUMNS + ("has_id", "id_correct", "id_correct_pattern", "id_correct_lexicon") + ID_OUTCOMES
# Metrics with a bootstrap interval (sums over billets; mAP and the read rates at a misread level,
# whose threshold is chosen on the billets, have none).
INTERVAL_METRICS = ("TP", "MC", "FN", "FP", "CB", "id_read_rate", "id_read_rate_pattern",
                    "id_read_rate_lexicon") + ID_OUTCOMES
TABLE_METRICS = ("TP", "MC", "FN", "FP", "CB", "mAP50", "id_read_rate", "id_read_rate_pattern",
                 "id_read_rate_lexicon") + ID_OUTCOMES


def id_level_metrics(misread_levels_pct) -> tuple[str, ...]:
    """Names of the read rates at the configured misread levels, every variant."""
    return tuple(level_name(v, x) for v in VARIANTS for x in misread_levels_pct)


def metrics_from_counts(totals: np.ndarray, with_pattern: bool, with_lexicon: bool = False) -> dict[str, np.ndarray]:
    """Every summed-count metric in percent from totals [..., len(RUN_COLUMNS)]; the pattern's and
    the lexicon's NaN where the run had none."""
    totals = np.asarray(totals, dtype=np.float64)
    out = percentages(totals[..., : len(COUNT_COLUMNS)])
    col = {name: totals[..., i] for i, name in enumerate(RUN_COLUMNS)}
    present = {"plain": True, "pattern": with_pattern, "lexicon": with_lexicon}
    with np.errstate(divide="ignore", invalid="ignore"):
        with_id = np.where(col["has_id"] > 0, col["has_id"], np.nan)
        nan = np.full_like(with_id, np.nan)
        out["id_read_rate"] = 100.0 * col["id_correct"] / with_id
        out["id_read_rate_pattern"] = 100.0 * col["id_correct_pattern"] / with_id if with_pattern else nan
        out["id_read_rate_lexicon"] = 100.0 * col["id_correct_lexicon"] / with_id if with_lexicon else nan
        for name in ID_OUTCOMES:
            out[name] = 100.0 * col[name] / with_id if present[name.rsplit("_", 1)[1]] else nan
    return out


def load_detections(path: str | os.PathLike) -> list[dict]:
    """A COCO results file (a JSON list); a clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: detections file not found")
    try:
        with open(path) as f:
            detections = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(detections, list):
        raise ValueError(f"{path}: expected a COCO results list [{{image_id, category_id, bbox, score}}, ...]")
    return detections


def evaluate(
    coco_gt: dict,
    detections: list[dict],
    evaluation: dict,
    bootstrap_seed: int,
    lexicon: dict[str, list[str]] | None = None,
) -> dict:
    """All metrics of one model on one test set, with bootstrap intervals and per-image counts.

    evaluation: the `evaluation` section of a validated config (iou_threshold, score_threshold,
    bootstrap_samples, id_pattern, id_reading); lexicon: expected IDs per batch (`load_lexicon`),
    None or empty for none.
    """
    iou_t = float(evaluation["iou_threshold"])
    score_t = float(evaluation["score_threshold"])
    reading = evaluation["id_reading"]
    names = [str(c["name"]) for c in sorted(coco_gt["categories"], key=lambda c: int(c["id"]))]
    pattern = IdPattern.from_config(evaluation["id_pattern"], names)
    lexicon = lexicon or None
    present = {"plain": True, "pattern": pattern is not None, "lexicon": lexicon is not None}

    matches = match_detections(coco_gt, detections, iou_threshold=iou_t, score_threshold=score_t)
    billets = read_billets(coco_gt, detections, score_threshold=score_t, pattern=pattern, lexicon=lexicon,
                           miss_probability=float(reading["miss_probability"]),
                           decoder_min_score=float(reading["min_score"]))
    has_id = np.array([r["has_id"] for r in billets], dtype=bool)
    ids = [has_id, *(np.array([r[f"correct_{v}"] for r in billets], dtype=bool) for v in VARIANTS)]
    point = []
    levels: dict[str, float] = {}
    curves = {}
    for v in VARIANTS:
        correct = np.array([r[f"correct_{v}"] for r in billets], dtype=bool)
        confidence = np.array([r[f"confidence_{v}"] if r[f"read_{v}"] is not None else np.nan for r in billets])
        point.append(outcomes(correct, confidence, float(reading["min_confidence"])) * has_id[:, None])
        curves[v] = read_misread_curve(correct[has_id], confidence[has_id])
        for x in reading["misread_levels_pct"]:
            levels[level_name(v, x)] = read_at_misread(curves[v], float(x)) if present[v] else float("nan")
    counts = np.concatenate(
        [count_matrix(matches), np.stack(ids, axis=1).astype(np.int64).reshape(-1, len(ids)), *point], axis=1
    )

    def metric_fn(totals: np.ndarray) -> dict[str, np.ndarray]:
        return metrics_from_counts(totals, present["pattern"], present["lexicon"])

    totals = counts.sum(axis=0)
    values = {k: float(v) for k, v in metric_fn(totals).items()}
    # COCOeval's per-detection matches, kept for mAP@0.5 on billet resamples (the comparisons); its
    # accumulation over every image is COCOeval's mAP@0.5 (equal to 1e-12, tests/test_coco_map.py)
    ap = ap_matches(coco_gt, detections, [m.image_id for m in matches])
    values["mAP50"] = float(resampled_map50(ap, np.ones((1, len(ap.image_ids))))[0])
    values.update(levels)
    intervals = bootstrap_intervals(counts, metric_fn, int(evaluation["bootstrap_samples"]), bootstrap_seed)
    col = dict(zip(RUN_COLUMNS, (int(v) for v in totals)))
    logger.info(
        "%d billets, %d characters, %d detections >= %.2f: %s",
        col["has_gt"], col["n_gt"], col["n_det"], score_t,
        ", ".join(f"{k} {v:.2f}" for k, v in values.items()),
    )
    return {
        "iou_threshold": iou_t,
        "score_threshold": score_t,
        "id_pattern": evaluation["id_pattern"],
        "id_reading": reading,
        "lexicon": present["lexicon"],
        "metrics": values,
        "intervals": {k: list(intervals[k]) for k in INTERVAL_METRICS},
        "counts": {
            "n_images": len(coco_gt["images"]),
            "n_billets": col["has_gt"],
            "n_characters": col["n_gt"],
            "n_detections": col["n_det"],
            "n_billet_ids": col["has_id"],
            "TP_n": col["tp"],
            "MC_n": col["mc"],
            "FN_n": col["n_gt"] - col["tp"],
            "FP_n": col["fp"],
            "CB_n": col["all_correct"],
        },
        "per_image": {
            "columns": list(RUN_COLUMNS),
            "image_id": [m.image_id for m in matches],
            "counts": counts.tolist(),
        },
        "ap_matches": ap.to_json(),
        "billet_ids": [
            {"image_id": r["image_id"], "billet_id": r["billet_id"],
             **{f"{k}_{v}": r[f"{k}_{v}"] for v in VARIANTS for k in ("read", "confidence")}}
            for r in billets
        ],
    }


def _json_safe(value):
    """NaN → null, recursively (strict JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def save_metrics(path: str | os.PathLike, result: dict) -> None:
    """Write a metrics file (strict JSON, NaN as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_json_safe(result), f, indent=1, sort_keys=True, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def load_metrics(path: str | os.PathLike) -> dict:
    """Read a metrics file; null metrics come back as NaN."""
    with open(path) as f:
        result = json.load(f)
    result["metrics"] = {k: float("nan") if v is None else float(v) for k, v in result["metrics"].items()}
    return result


def evaluate_files(
    gt_path: str | os.PathLike,
    detections_path: str | os.PathLike,
    out_path: str | os.PathLike,
    evaluation: dict,
    root_seed: int,
    experiment: int,
    seed: int,
    test_set: int,
    lexicon_path: str | os.PathLike | None = None,
) -> dict:
    """The metrics job of one experiment × seed × test set: read, evaluate, write `out_path`.

    lexicon_path: the test set's lexicon CSV (`billetjax.data.testsets`); None or an empty one: none.
    """
    coco_gt = cc.load(gt_path, require_extras=False)
    detections = load_detections(detections_path)
    lexicon = load_lexicon(lexicon_path) if lexicon_path is not None else None
    logger.info("evaluating %s (%d detections) against %s", detections_path, len(detections), gt_path)
    try:
        result = evaluate(
            coco_gt, detections, evaluation,
            stage_seed(root_seed, "evaluation", "bootstrap", experiment, seed, test_set),
            lexicon,
        )
    except ValueError as err:
        raise ValueError(f"{detections_path} vs {gt_path}: {err}") from None
    result.update(experiment=int(experiment), seed=int(seed), test_set=int(test_set))
    save_metrics(out_path, result)
    return result
