"""Reading a billet's ID from its detections (beyond the paper; paper §4 motivates the pattern).

Detections above the score threshold are de-duplicated class-agnostically, grouped into text rows
(robust to a slight rotation of the billet face) and read top row first, left to right. An optional
ID pattern (`evaluation.id_pattern`) picks the best valid reading from the per-box class scores:
which boxes to drop as false positives, and the best allowed character at each position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from billetjax.evaluation.metrics import check_detections, iou_xywh

DEDUPE_IOU = 0.5  # two boxes overlapping more than this are one character (keep the higher score)
ROW_GAP = 0.5  # a new text row starts where rotated centres jump by more than this × median box height
MAX_TEXT_ANGLE_DEG = 30.0  # text rows are searched within ±this of horizontal ("slight rotation")
ANGLE_STEP_DEG = 0.1
ALIGN_SIGMA = 0.2  # tolerance of row alignment, × median character height
LOG_FLOOR = 1e-12  # probabilities are floored here before the log (an impossible choice stays finite)


def dedupe(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = DEDUPE_IOU) -> np.ndarray:
    """Class-agnostic greedy NMS on xywh boxes; indices kept, highest score first (stable)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ious = iou_xywh(boxes, boxes)
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= ious[i] > iou_threshold
    return np.array(keep, dtype=np.int64)


def text_angle(centres: np.ndarray, height: float) -> float:
    """Dominant text direction in radians (0 = horizontal, image y pointing down).

    Deskewing by projection: at the right angle the characters of a row share one coordinate
    across the rows, so we take the angle (within ±MAX_TEXT_ANGLE_DEG) that maximises how many
    pairs of centres align across, each pair counted by a Gaussian of its offset (width
    ALIGN_SIGMA × character height). Robust to the jitter of single characters, which defeats
    local estimates such as nearest-neighbour directions.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    if len(centres) < 2:
        return 0.0
    angles = np.radians(np.arange(-MAX_TEXT_ANGLE_DEG, MAX_TEXT_ANGLE_DEG + 1e-9, ANGLE_STEP_DEG))
    i, j = np.triu_indices(len(centres), k=1)
    d = centres[j] - centres[i]  # [pairs, 2]
    across = -np.sin(angles)[:, None] * d[None, :, 0] + np.cos(angles)[:, None] * d[None, :, 1]
    sigma = ALIGN_SIGMA * max(float(height), 1e-6)
    score = np.exp(-0.5 * (across / sigma) ** 2).sum(axis=1)
    # On a plateau (one row, or exact ties) prefer the angle closest to horizontal.
    best = np.flatnonzero(score >= score.max() - 1e-9)
    return float(angles[best[np.argmin(np.abs(angles[best]))]])


def reading_order(boxes: np.ndarray) -> list[np.ndarray]:
    """Rows of box indices (top row first), each left to right, for xywh boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return []
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    height = float(np.median(boxes[:, 3]))
    angle = text_angle(centres, height)
    cos, sin = math.cos(angle), math.sin(angle)
    # Rotate by -angle so the rows become horizontal.
    along = cos * centres[:, 0] + sin * centres[:, 1]
    across = -sin * centres[:, 0] + cos * centres[:, 1]
    by_across = np.argsort(across, kind="stable")
    gaps = np.diff(across[by_across])
    breaks = np.flatnonzero(gaps > ROW_GAP * height) + 1
    rows = np.split(by_across, breaks)
    return [row[np.argsort(along[row], kind="stable")] for row in rows]


def normalise_id(text: str) -> str:
    """An ID string without whitespace (row breaks and spacing are layout, not characters)."""
    return "".join(str(text).split())


@dataclass(frozen=True)
class IdPattern:
    """Prior knowledge on how billet IDs are built: allowed lengths and characters per position."""

    lengths: tuple[int, ...]
    allowed: tuple[str, ...]  # allowed characters for positions 0 .. max(lengths) - 1

    @classmethod
    def from_config(cls, spec: dict | None, category_names: list[str]) -> "IdPattern | None":
        """Build from `evaluation.id_pattern` (see the config schema); None stays None.

        `length` (int or list), `alphabet` (characters allowed at every position; default: all
        categories) and `positions` (allowed characters for the first positions, overriding
        `alphabet` there; without `length`, its size is the length).
        """
        if spec is None:
            return None
        bad_names = [n for n in category_names if len(n) != 1]
        if bad_names:
            raise ValueError(f"evaluation.id_pattern needs single-character category names; got {bad_names}")
        positions = list(spec.get("positions") or [])
        length = spec.get("length", len(positions) or None)
        if length is None:
            raise ValueError("evaluation.id_pattern: give 'length' or 'positions'")
        lengths = tuple(sorted({int(n) for n in (length if isinstance(length, (list, tuple)) else [length])}))
        if not lengths or lengths[0] < 1:
            raise ValueError(f"evaluation.id_pattern.length must be positive, got {length!r}")
        alphabet = spec.get("alphabet") or "".join(category_names)
        if len(positions) > lengths[-1]:
            raise ValueError(
                f"evaluation.id_pattern: {len(positions)} positions given but the longest ID has {lengths[-1]}"
            )
        allowed = tuple(positions + [alphabet] * (lengths[-1] - len(positions)))
        known = set(category_names)
        for i, chars in enumerate(allowed):
            unknown = sorted(set(chars) - known)
            if unknown or not chars:
                raise ValueError(
                    f"evaluation.id_pattern: position {i} allows {chars!r}; "
                    f"characters {unknown} are not categories {sorted(known)}" if unknown
                    else f"evaluation.id_pattern: position {i} allows no character"
                )
        return cls(lengths, allowed)

    def matches(self, text: str) -> bool:
        """Whether a string is a valid ID under this pattern."""
        return len(text) in self.lengths and all(c in self.allowed[i] for i, c in enumerate(text))


def decode_with_pattern(
    probs: np.ndarray, category_names: list[str], pattern: IdPattern
) -> str | None:
    """The most likely valid ID from boxes in reading order, or None when none is possible.

    probs: float[n, K] class probabilities per box (categories sorted by id); what is missing to 1
    is the probability that the box is no character. Dynamic programming over (box, position):
    each box is either a character at the next position (log p of its best allowed character) or
    dropped as a false positive (log of its background probability); IDs of every allowed length
    compete on the same total over all boxes.
    """
    probs = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1, len(category_names)), 0.0, 1.0)
    n, n_pos = len(probs), pattern.lengths[-1]
    if n < pattern.lengths[0]:
        return None
    column = {name: k for k, name in enumerate(category_names)}
    # best[i, j]: log-probability and category of box i's best allowed character at position j.
    keep_logp = np.full((n, n_pos), -np.inf)
    keep_char = np.zeros((n, n_pos), dtype=np.int64)
    for j, chars in enumerate(pattern.allowed):
        cols = np.array([column[c] for c in chars])
        sub = probs[:, cols]
        pick = np.argmax(sub, axis=1)
        keep_logp[:, j] = np.log(np.maximum(sub[np.arange(n), pick], LOG_FLOOR))
        keep_char[:, j] = cols[pick]
    drop_logp = np.log(np.maximum(1.0 - probs.sum(axis=1), LOG_FLOOR))

    # score[i, j]: best total for the first i boxes filling the first j positions.
    score = np.full((n + 1, n_pos + 1), -np.inf)
    score[0, 0] = 0.0
    kept = np.zeros((n + 1, n_pos + 1), dtype=bool)
    for i in range(1, n + 1):
        drop = score[i - 1] + drop_logp[i - 1]
        keep = np.full(n_pos + 1, -np.inf)
        keep[1:] = score[i - 1, :-1] + keep_logp[i - 1]
        kept[i] = keep > drop
        score[i] = np.maximum(keep, drop)
    finals = [(score[n, length], length) for length in pattern.lengths if np.isfinite(score[n, length])]
    if not finals:
        return None
    _, j = max(finals)
    chars: list[str] = []
    for i in range(n, 0, -1):
        if kept[i, j]:
            chars.append(category_names[keep_char[i - 1, j - 1]])
            j -= 1
    return "".join(reversed(chars))


def class_probabilities(detections: list[dict], category_ids: list[int]) -> np.ndarray:
    """float[n, K]: joint probabilities (box is character c); what is missing to 1 is background.

    From a detection's `class_scores` (one per category, ascending id) when present, rescaled so
    that the entry of its own label equals its `score`: scores that are already joint stay as
    they are, and a softmax over the characters alone (conditional on "is a character", as our
    detector writes it) becomes joint with P(character) = score / class_scores[label]. Without
    `class_scores`: its score at its label.
    """
    column = {cid: k for k, cid in enumerate(category_ids)}
    probs = np.zeros((len(detections), len(category_ids)))
    for i, det in enumerate(detections):
        label, score = column[int(det["category_id"])], float(det["score"])
        scores = det.get("class_scores")
        if scores is None:
            probs[i, label] = score
            continue
        if len(scores) != len(category_ids):
            raise ValueError(
                f"detection on image {det['image_id']}: class_scores has {len(scores)} entries, "
                f"the ground truth has {len(category_ids)} categories (one score per category, sorted by id)"
            )
        row = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        if row[label] > 0:
            row = row * (score / row[label])
        else:
            row = np.zeros_like(row)
            row[label] = score
        probs[i] = row / max(1.0, row.sum())
    return probs


def read_billets(
    coco_gt: dict,
    detections: list[dict],
    score_threshold: float = 0.5,
    pattern: IdPattern | None = None,
) -> list[dict]:
    """Per image: the ID read plainly and with the pattern, and whether each equals `billet_id`.

    Records (image order of the file): `image_id`, `billet_id`, `read`, `read_pattern` (None without
    a pattern or without a valid reading), `has_id`, `correct`, `correct_pattern`.
    """
    check_detections(coco_gt, detections)
    categories = sorted(coco_gt["categories"], key=lambda c: int(c["id"]))
    category_ids = [int(c["id"]) for c in categories]
    names = [str(c["name"]) for c in categories]
    name_of = dict(zip(category_ids, names))
    per_image: dict[int, list[dict]] = {int(img["id"]): [] for img in coco_gt["images"]}
    for det in detections:
        if float(det["score"]) >= score_threshold:
            per_image[int(det["image_id"])].append(det)

    records = []
    for img in coco_gt["images"]:
        dets = per_image[int(img["id"])]
        truth = normalise_id(img.get("billet_id", "") or "")
        read, read_pattern = "", None
        if dets:
            boxes = np.array([d["bbox"] for d in dets], dtype=np.float64)
            scores = np.array([d["score"] for d in dets], dtype=np.float64)
            keep = dedupe(boxes, scores)
            order = np.concatenate(reading_order(boxes[keep]))
            ordered = [dets[i] for i in keep[order]]
            read = "".join(name_of[int(d["category_id"])] for d in ordered)
            if pattern is not None:
                read_pattern = decode_with_pattern(class_probabilities(ordered, category_ids), names, pattern)
        elif pattern is not None:
            read_pattern = decode_with_pattern(np.zeros((0, len(names))), names, pattern)
        records.append({
            "image_id": int(img["id"]),
            "billet_id": truth,
            "read": read,
            "read_pattern": read_pattern,
            "has_id": bool(truth),
            "correct": bool(truth) and read == truth,
            "correct_pattern": bool(truth) and read_pattern == truth,
        })
    return records
