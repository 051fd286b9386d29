"""mAP@0.5 as the COCO toolkit computes it (pycocotools' COCOeval); no hand-written replacement."""

from __future__ import annotations

import contextlib
import copy
import io
import logging

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

logger = logging.getLogger(__name__)

MAP_IOU = 0.5  # the paper's mAP@0.5; fixed, whatever evaluation.iou_threshold says


def map50(coco_gt: dict, detections: list[dict]) -> float:
    """Mean average precision at IoU 0.5 over the categories present in the ground truth.

    Uses every detection (mAP needs no score threshold). No detections give 0.0; no ground truth
    at all gives NaN. pycocotools' prints go to the log at DEBUG level.
    """
    if not coco_gt["annotations"]:
        return float("nan")
    if not detections:
        return 0.0
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
        evaluator.accumulate()
    logger.debug("pycocotools: %s", chatter.getvalue().strip())
    # precision[T, R, K, A, M]: the one IoU threshold, all recall points and categories,
    # area range "all" (index 0) and the largest maxDets (last), as COCOeval.summarize does.
    precision = evaluator.eval["precision"][0, :, :, 0, -1]
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float("nan")
