"""Evaluation: the paper's digit metrics, mAP@0.5, billet-ID reading, intervals, tables, figures.

`billetjax.evaluation.metrics` is the only place TP, MC, FN, FP and CB are computed (their
definitions: docs/architecture.md, "Contracts", "Metrics").
"""

from billetjax.evaluation.billet_id import IdPattern, read_billets, reading_order
from billetjax.coco_map import map50
from billetjax.evaluation.metrics import ImageMatch, digit_metrics, match_detections

__all__ = [
    "IdPattern",
    "ImageMatch",
    "digit_metrics",
    "map50",
    "match_detections",
    "read_billets",
    "reading_order",
]
