"""The paper's digit metrics TP, MC, FN, FP and CB (paper §3.2; docs/architecture.md, "Metrics").

This module is the only source of truth for these numbers: tables, bootstrap intervals and the
detection gallery all start from `match_detections`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Per-image count columns, in this order, wherever counts travel as a matrix (bootstrap, JSON).
COUNT_COLUMNS = ("n_gt", "tp", "mc", "fp", "n_det", "all_correct", "has_gt")


@dataclass(frozen=True)
class ImageMatch:
    """The outcome of matching one image's detections to its ground truth.

    Detections are those kept by the score threshold, sorted by score (highest first, stable).
    `det_match[i]` is the index of the ground-truth box detection i is matched to, or -1.
    """

    image_id: int
    gt_boxes: np.ndarray  # float64[G, 4] xywh, in file order
    gt_labels: np.ndarray  # int64[G] category ids
    det_boxes: np.ndarray  # float64[D, 4] xywh
    det_labels: np.ndarray  # int64[D]
    det_scores: np.ndarray  # float64[D]
    det_index: np.ndarray  # int64[D]: position of each detection in the input list
    det_match: np.ndarray  # int64[D]

    @property
    def det_outcome(self) -> np.ndarray:
        """'TP', 'MC' or 'FP' per detection."""
        out = np.full(len(self.det_match), "FP", dtype="<U2")
        matched = self.det_match >= 0
        same = np.zeros_like(matched)
        same[matched] = self.det_labels[matched] == self.gt_labels[self.det_match[matched]]
        out[matched & same] = "TP"
        out[matched & ~same] = "MC"
        return out

    @property
    def gt_found(self) -> np.ndarray:
        """bool[G]: ground-truth boxes some detection was matched to (correctly or not)."""
        found = np.zeros(len(self.gt_labels), dtype=bool)
        found[self.det_match[self.det_match >= 0]] = True
        return found

    def counts(self) -> np.ndarray:
        """int64 counts in the order of `COUNT_COLUMNS`."""
        outcome = self.det_outcome
        n_gt = len(self.gt_labels)
        tp = int(np.count_nonzero(outcome == "TP"))
        mc = int(np.count_nonzero(outcome == "MC"))
        fp = int(np.count_nonzero(outcome == "FP"))
        return np.array(
            [n_gt, tp, mc, fp, len(outcome), int(n_gt > 0 and tp == n_gt), int(n_gt > 0)],
            dtype=np.int64,
        )


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [N, M] of COCO boxes [x, y, w, h] (continuous areas, as pycocotools)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _greedy_match(ious: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Match detections (rows, already in score order) to ground truth (columns), greedily
    (docs/architecture.md, "Metrics")."""
    n_det, n_gt = ious.shape
    match = np.full(n_det, -1, dtype=np.int64)
    if n_gt == 0:
        return match
    free = np.ones(n_gt, dtype=bool)
    for d in range(n_det):
        if not free.any():
            break
        # Taken boxes get -1 so they never win; argmax takes the first maximum, i.e. the earlier
        # annotation of the file on ties.
        row = np.where(free, ious[d], -1.0)
        g = int(np.argmax(row))
        if row[g] >= iou_threshold:
            match[d] = g
            free[g] = False
    return match


def check_detections(coco_gt: dict, detections: list[dict], source: str = "detections") -> None:
    """Refuse detections that cannot be evaluated against `coco_gt`, naming the record."""
    if not isinstance(detections, list):
        raise ValueError(f"{source}: expected a COCO results list, got {type(detections).__name__}")
    image_ids = {int(img["id"]) for img in coco_gt["images"]}
    category_ids = {int(c["id"]) for c in coco_gt["categories"]}
    for i, det in enumerate(detections):
        if not isinstance(det, dict):
            raise ValueError(f"{source}[{i}]: not an object")
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in det:
                raise ValueError(f"{source}[{i}]: missing '{key}' (COCO results need image_id, category_id, bbox, score)")
        if int(det["image_id"]) not in image_ids:
            raise ValueError(
                f"{source}[{i}]: image_id {det['image_id']} is not in the ground truth "
                "(were the detections made on another test set?)"
            )
        if int(det["category_id"]) not in category_ids:
            raise ValueError(
                f"{source}[{i}]: unknown category_id {det['category_id']}; "
                f"the ground truth defines {sorted(category_ids)}"
            )
        bbox = det["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
            raise ValueError(f"{source}[{i}]: bbox must be [x, y, w, h], got {bbox!r}")


def match_detections(
    coco_gt: dict,
    detections: list[dict],
    *,
    iou_threshold: float,
    score_threshold: float,
) -> list[ImageMatch]:
    """Match detections to ground truth per image (docs/architecture.md, "Metrics"); one `ImageMatch`
    per GT image, in file order."""
    check_detections(coco_gt, detections)
    gt_by_image: dict[int, list[dict]] = {int(img["id"]): [] for img in coco_gt["images"]}
    for ann in coco_gt["annotations"]:
        gt_by_image[int(ann["image_id"])].append(ann)
    det_by_image: dict[int, list[int]] = {i: [] for i in gt_by_image}
    for i, det in enumerate(detections):
        if float(det["score"]) >= score_threshold:
            det_by_image[int(det["image_id"])].append(i)

    matches = []
    for image_id, anns in gt_by_image.items():
        gt_boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        gt_labels = np.array([a["category_id"] for a in anns], dtype=np.int64)
        index = np.array(det_by_image[image_id], dtype=np.int64)
        scores = np.array([detections[i]["score"] for i in index], dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        index, scores = index[order], scores[order]
        det_boxes = np.array([detections[i]["bbox"] for i in index], dtype=np.float64).reshape(-1, 4)
        det_labels = np.array([detections[i]["category_id"] for i in index], dtype=np.int64)
        match = _greedy_match(iou_xywh(det_boxes, gt_boxes), iou_threshold)
        matches.append(ImageMatch(image_id, gt_boxes, gt_labels, det_boxes, det_labels, scores, index, match))
    return matches


def count_matrix(matches: list[ImageMatch]) -> np.ndarray:
    """int64[images, len(COUNT_COLUMNS)]: the per-image counts every metric is a ratio of."""
    if not matches:
        return np.zeros((0, len(COUNT_COLUMNS)), dtype=np.int64)
    return np.stack([m.counts() for m in matches])


def percentages(totals: np.ndarray) -> dict[str, float]:
    """TP, MC, FN, FP, CB in percent from summed counts (`COUNT_COLUMNS` order, any leading axes).

    A ratio with a zero denominator is NaN (no ground truth: nothing to measure).
    """
    totals = np.asarray(totals, dtype=np.float64)
    col = {name: totals[..., i] for i, name in enumerate(COUNT_COLUMNS)}
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(col["n_gt"] > 0, col["n_gt"], np.nan)
        billets = np.where(col["has_gt"] > 0, col["has_gt"], np.nan)
        return {
            "TP": 100.0 * col["tp"] / g,
            "MC": 100.0 * col["mc"] / g,
            "FN": 100.0 * (col["n_gt"] - col["tp"]) / g,
            "FP": 100.0 * col["fp"] / g,
            "CB": 100.0 * col["all_correct"] / billets,
        }


def digit_metrics(
    coco_gt: dict,
    detections: list[dict],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> dict:
    """TP, MC, FN, FP, CB in percent (docs/architecture.md, "Metrics"), plus the counts behind them.

    Count keys: `n_characters` (G), `n_billets` (images with ground truth), `n_images`,
    `n_detections` (kept by the score threshold), `TP_n`, `MC_n`, `FN_n`, `FP_n`, `CB_n`.
    """
    totals = count_matrix(match_detections(coco_gt, detections, iou_threshold=iou_threshold,
                                           score_threshold=score_threshold)).sum(axis=0)
    if totals.size == 0:
        totals = np.zeros(len(COUNT_COLUMNS), dtype=np.int64)
    col = dict(zip(COUNT_COLUMNS, (int(v) for v in totals)))
    out: dict = {k: float(v) for k, v in percentages(totals).items()}
    out.update(
        n_characters=col["n_gt"],
        n_billets=col["has_gt"],
        n_images=len(coco_gt["images"]),
        n_detections=col["n_det"],
        TP_n=col["tp"],
        MC_n=col["mc"],
        FN_n=col["n_gt"] - col["tp"],
        FP_n=col["fp"],
        CB_n=col["all_correct"],
    )
    return out
