"""mAP@0.5 as the COCO toolkit computes it (pycocotools' COCOeval), on the full test set and on
billet resamples. The detector's validation and the evaluation both use it, so it stands below
both.

`map50` is COCOeval's number. For an interval, `ap_matches` keeps what COCOeval decided per
detection (its image, category, score and whether it matched a ground-truth box at IoU 0.5) and
`resampled_map50` recomputes COCOeval's accumulation under bootstrap weights per image: a billet
drawn twice counts its detections and ground truth twice, as if it were two images. The matching
itself stays pycocotools'; only the accumulation (ranking, cumulative precision and recall, the
101-point interpolation, the mean over categories with ground truth) is redone with weights, and
`tests/test_coco_map.py` holds it equal to COCOeval on duplicated images.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

logger = logging.getLogger(__name__)

MAP_IOU = 0.5  # the paper's mAP@0.5; fixed, whatever evaluation.iou_threshold says
# COCOeval's recall thresholds (Params.setDetParams), spelled as it spells them so that the
# floating-point values are the same.
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)


def _evaluated(coco_gt: dict, detections: list[dict]) -> COCOeval:
    """COCOeval after `evaluate()` at IoU 0.5 (bbox); pycocotools' prints go to the log."""
    gt = {
        "info": coco_gt.get("info", {}),
        "licenses": coco_gt.get("licenses", []),
        "images": [{"id": img["id"], "width": img["width"], "height": img["height"]} for img in coco_gt["images"]],
        "categories": copy.deepcopy(coco_gt["categories"]),
        # pycocotools needs area and iscrowd; the box area is the one COCOeval's bbox mode compares.
        "annotations": [
            {
                "id": ann["id"],
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": list(ann["bbox"]),
                "area": float(ann.get("area", ann["bbox"][2] * ann["bbox"][3])),
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
            for ann in coco_gt["annotations"]
        ],
    }
    # loadRes edits the records it is given; hand it copies without our extra keys.
    results = [
        {"image_id": d["image_id"], "category_id": d["category_id"], "bbox": list(d["bbox"]), "score": float(d["score"])}
        for d in detections
    ]
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), iouType="bbox")
        evaluator.params.iouThrs = np.array([MAP_IOU])
        evaluator.evaluate()
    logger.debug("pycocotools: %s", chatter.getvalue().strip())
    return evaluator


def map50(coco_gt: dict, detections: list[dict]) -> float:
    """Mean average precision at IoU 0.5 over the categories present in the ground truth.

    Uses every detection (mAP needs no score threshold). No detections give 0.0; no ground truth
    at all gives NaN.
    """
    if not coco_gt["annotations"]:
        return float("nan")
    if not detections:
        return 0.0
    evaluator = _evaluated(coco_gt, detections)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.accumulate()
    # precision[T, R, K, A, M]: the one IoU threshold, all recall points and categories,
    # area range "all" (index 0) and the largest maxDets (last), as COCOeval.summarize does.
    precision = evaluator.eval["precision"][0, :, :, 0, -1]
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float("nan")


@dataclass(frozen=True)
class ApMatches:
    """COCOeval's per-detection decisions at IoU 0.5 (area "all", its 100 detections per image),
    in its order: categories by id, then images by id, then score within an image.

    Ignored detections (matched to crowd boxes) are left out: they count for nothing.
    """

    image_ids: tuple[int, ...]  # the image axis of `image` and `n_gt` (the caller's order)
    category_ids: tuple[int, ...]  # the category axis of `category` and `n_gt`
    image: np.ndarray  # int64[D]: index into image_ids
    category: np.ndarray  # int64[D]: index into category_ids
    score: np.ndarray  # float64[D]
    tp: np.ndarray  # bool[D]: matched a ground-truth box of its category at IoU >= 0.5
    n_gt: np.ndarray  # int64[images, categories]: ground-truth boxes that are not ignored

    def to_json(self) -> dict:
        return {"image_ids": list(self.image_ids), "category_ids": list(self.category_ids),
                "image": self.image.tolist(), "category": self.category.tolist(),
                "score": self.score.tolist(), "tp": self.tp.astype(int).tolist(), "n_gt": self.n_gt.tolist()}

    @classmethod
    def from_json(cls, record: dict) -> ApMatches:
        n_images, n_categories = len(record["image_ids"]), len(record["category_ids"])
        return cls(tuple(int(i) for i in record["image_ids"]), tuple(int(c) for c in record["category_ids"]),
                   np.asarray(record["image"], dtype=np.int64), np.asarray(record["category"], dtype=np.int64),
                   np.asarray(record["score"], dtype=np.float64), np.asarray(record["tp"], dtype=bool),
                   np.asarray(record["n_gt"], dtype=np.int64).reshape(n_images, n_categories))


def ap_matches(coco_gt: dict, detections: list[dict], image_ids: Sequence[int] | None = None) -> ApMatches:
    """What COCOeval matched, per detection, for `resampled_map50`; images in the order of
    `image_ids` (default: the file's), which must be the ground truth's images."""
    order = tuple(int(i) for i in (image_ids if image_ids is not None else [img["id"] for img in coco_gt["images"]]))
    if sorted(order) != sorted(int(img["id"]) for img in coco_gt["images"]):
        raise ValueError("ap_matches: image_ids must be the ground truth's images, each once")
    category_ids = tuple(sorted(int(c["id"]) for c in coco_gt["categories"]))
    position = {image_id: i for i, image_id in enumerate(order)}
    n_gt = np.zeros((len(order), len(category_ids)), dtype=np.int64)
    image, category, score, tp = [], [], [], []
    if coco_gt["annotations"] and detections:
        evaluator = _evaluated(coco_gt, detections)
        params = evaluator.params
        n_images, n_areas = len(params.imgIds), len(params.areaRng)
        max_det = params.maxDets[-1]
        for k, category_id in enumerate(params.catIds):
            column = category_ids.index(int(category_id))
            for i in range(n_images):
                e = evaluator.evalImgs[k * n_areas * n_images + i]  # area range "all" is index 0
                if e is None:
                    continue
                row = position[int(e["image_id"])]
                n_gt[row, column] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
                keep = ~np.asarray(e["dtIgnore"], dtype=bool)[0, :max_det]
                matched = np.asarray(e["dtMatches"])[0, :max_det] > 0
                scores = np.asarray(e["dtScores"], dtype=np.float64)[:max_det]
                image += [row] * int(keep.sum())
                category += [column] * int(keep.sum())
                score += scores[keep].tolist()
                tp += matched[keep].tolist()
    else:
        for ann in coco_gt["annotations"]:
            if not int(ann.get("iscrowd", 0)):
                n_gt[position[int(ann["image_id"])], category_ids.index(int(ann["category_id"]))] += 1
    return ApMatches(order, category_ids, np.asarray(image, dtype=np.int64), np.asarray(category, dtype=np.int64),
                     np.asarray(score, dtype=np.float64), np.asarray(tp, dtype=bool), n_gt)


def resampled_map50(matches: ApMatches, weights: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """float64[B]: mAP@0.5 under each row of `weights` (float[B, images], how often each image is
    drawn; all ones give COCOeval's `map50`).

    Per category, COCOeval ranks the detections by score, accumulates true and false positives,
    takes the precision envelope and reads it at 101 recall thresholds; a category without
    ground truth in a resample leaves that resample's mean. Only the ends of runs of true
    positives matter: recall rises only at true positives; a false positive's precision is below
    that of the true positive ranked before it, so it never lifts the envelope; and within a run
    precision rises, so every true positive of a run has the envelope of the run's last. So, per
    resample, the weighted counts of true and false positives up to each run's end are one matrix
    product (the weights times per-image counts), and the rest is elementwise on [B, runs].
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n_images = len(matches.image_ids)
    if weights.shape[1] != n_images:
        raise ValueError(f"weights for {weights.shape[1]} images, matches for {n_images}")
    # Per category (by index), the per-image counts of true and false positives up to the end of
    # each run of true positives in COCOeval's ranking: one segment of columns per category.
    tp_cols, fp_cols, segments = [], [], []
    for k in range(len(matches.category_ids)):
        mine = np.flatnonzero(matches.category == k)
        order = mine[np.argsort(-matches.score[mine], kind="mergesort")]
        tp = matches.tp[order]
        if not tp.any():
            continue  # AP 0 wherever the category has ground truth
        onehot = np.zeros((n_images, order.size))
        onehot[matches.image[order], np.arange(order.size)] = 1.0
        ends = np.flatnonzero(tp & ~np.append(tp[1:], False))  # the last true positive of each run
        tp_cols.append(np.cumsum(onehot * tp, axis=1)[:, ends])
        fp_cols.append(np.cumsum(onehot * ~tp, axis=1)[:, ends])
        segments.append((k, ends.size))
    n_rows = weights.shape[0]
    n_gt = weights @ matches.n_gt.astype(np.float64)  # [B, categories]
    valid = n_gt > 0
    ap = np.zeros_like(n_gt)
    if segments:
        counts = np.concatenate(tp_cols + fp_cols, axis=1)  # [images, 2 m]
        m = counts.shape[1] // 2
        starts = np.cumsum([0] + [size for _, size in segments[:-1]])
        column_category = np.repeat([k for k, _ in segments], [size for _, size in segments])
        for first in range(0, n_rows, chunk):
            rows = slice(first, first + chunk)
            summed = weights[rows] @ counts
            tp_sum, fp_sum = summed[:, :m], summed[:, m:]
            with np.errstate(divide="ignore", invalid="ignore"):
                recall = tp_sum / n_gt[rows][:, column_category]
            precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
            # COCOeval reads, at each threshold r, the envelope at the first rank whose recall
            # reaches r: the run i holds the thresholds in (recall[i-1], recall[i]].
            reached = np.searchsorted(RECALL_THRESHOLDS, recall, side="right")
            held = np.diff(reached, axis=1, prepend=0)
            held[:, starts] = reached[:, starts]
            envelope = np.empty_like(precision)
            for start, (_, size) in zip(starts, segments):
                part = precision[:, start:start + size]
                envelope[:, start:start + size] = np.maximum.accumulate(part[:, ::-1], axis=1)[:, ::-1]
            ap[rows, [k for k, _ in segments]] = np.add.reduceat(envelope * held, starts, axis=1) / RECALL_THRESHOLDS.size
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid.any(axis=1), np.where(valid, ap, 0.0).sum(axis=1) / valid.sum(axis=1), np.nan)
