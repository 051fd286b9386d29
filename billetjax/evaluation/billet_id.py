"""Reading a billet's ID from its detections (beyond the paper; paper §4 motivates the pattern).

Detections above the score threshold become characters: duplicates merged class-agnostically
(`merge_duplicates`), grouped into text rows (robust to a slight rotation of the billet face) and
put in reading order, top row first, left to right. The decoders of
`billetjax.evaluation.id_decoder` read the ID from them: plainly, with the ID's grammar
(`IdPattern`, from `evaluation.id_pattern`) and with a lexicon of expected IDs (`load_lexicon`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from billetjax.data.lexicon import normalise_id
from billetjax.evaluation.metrics import check_detections, iou_xywh

DEDUPE_IOU = 0.5  # two boxes overlapping more than this are one character (keep the higher score)
ROW_GAP = 0.5  # a new text row starts where rotated centres jump by more than this × median box height
MAX_TEXT_ANGLE_DEG = 30.0  # text rows are searched within ±this of horizontal ("slight rotation")
ANGLE_STEP_DEG = 0.1
COARSE_STEP_DEG = 1.0
ALIGN_SIGMA = 0.2  # tolerance of row alignment, × median character height


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
    i, j = np.triu_indices(len(centres), k=1)
    d = centres[j] - centres[i]  # [pairs, 2]
    sigma = ALIGN_SIGMA * max(float(height), 1e-6)

    def best_of(angles_deg: np.ndarray) -> float:
        angles = np.radians(angles_deg)
        across = -np.sin(angles)[:, None] * d[None, :, 0] + np.cos(angles)[:, None] * d[None, :, 1]
        score = np.exp(-0.5 * (across / sigma) ** 2).sum(axis=1)
        # On a plateau (one row, or exact ties) prefer the angle closest to horizontal.
        best = np.flatnonzero(score >= score.max() - 1e-9)
        return float(angles_deg[best[np.argmin(np.abs(angles_deg[best]))]])

    # Coarse to fine (the score varies slowly: a 1° turn moves a pair 5 characters apart by
    # less than half the Gaussian's width), then ANGLE_STEP_DEG within ±1° of the coarse best.
    coarse = best_of(np.arange(-MAX_TEXT_ANGLE_DEG, MAX_TEXT_ANGLE_DEG + 1e-9, COARSE_STEP_DEG))
    fine = np.arange(-COARSE_STEP_DEG, COARSE_STEP_DEG + 1e-9, ANGLE_STEP_DEG) + coarse
    return math.radians(best_of(np.round(fine[np.abs(fine) <= MAX_TEXT_ANGLE_DEG + 1e-9], 6)))


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


@dataclass(frozen=True)
class IdPattern:
    """Prior knowledge on how billet IDs are built: allowed lengths and characters per position."""

    lengths: tuple[int, ...]
    allowed: tuple[str, ...]  # allowed characters for positions 0 .. max(lengths) - 1
    rows: tuple[tuple[int, ...], ...] | None = None  # allowed lengths of each stamped row, top first

    @classmethod
    def from_config(cls, spec: dict | None, category_names: list[str]) -> "IdPattern | None":
        """Build from `evaluation.id_pattern` (see the config schema); None stays None.

        `length` (int or list), `alphabet` (characters allowed at every position; default: all
        categories), `positions` (allowed characters for the first positions, overriding
        `alphabet` there; without `length`, its size is the length) and `rows` (the lengths each
        stamped row may have, top row first, an int or a list each; the ID's lengths are their
        sums, and `length`, where given too, must agree).
        """
        if spec is None:
            return None
        bad_names = [n for n in category_names if len(n) != 1]
        if bad_names:
            raise ValueError(f"evaluation.id_pattern needs single-character category names; got {bad_names}")
        positions = list(spec.get("positions") or [])
        rows = None
        if spec.get("rows"):
            rows = tuple(tuple(sorted({int(n) for n in (r if isinstance(r, (list, tuple)) else [r])}))
                         for r in spec["rows"])
            if any(not r or r[0] < 1 for r in rows):
                raise ValueError(f"evaluation.id_pattern.rows: every row needs a positive length, got {spec['rows']!r}")
            sums = {0}
            for r in rows:
                sums = {s + n for s in sums for n in r}
            row_total = tuple(sorted(sums))
        length = spec.get("length", (list(row_total) if rows else len(positions)) or None)
        if length is None:
            raise ValueError("evaluation.id_pattern: give 'length', 'rows' or 'positions'")
        lengths = tuple(sorted({int(n) for n in (length if isinstance(length, (list, tuple)) else [length])}))
        if rows and lengths != row_total:
            raise ValueError(
                f"evaluation.id_pattern: rows {spec['rows']!r} give IDs of {list(row_total)} characters, "
                f"but length is {length!r}; make them agree (or leave length out)"
            )
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
        return cls(lengths, allowed, rows)

    def row_lengths(self) -> tuple[tuple[int, ...], ...]:
        """The allowed lengths of each row; without `rows`, one row of the ID's lengths."""
        return self.rows if self.rows else (self.lengths,)

    def matches(self, text: str) -> bool:
        """Whether a string is a valid ID under this pattern."""
        return len(text) in self.lengths and all(c in self.allowed[i] for i, c in enumerate(text))


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


def merge_duplicates(
    boxes: np.ndarray, probs: np.ndarray, iou_threshold: float = DEDUPE_IOU
) -> tuple[np.ndarray, np.ndarray]:
    """One character per location: (kept indices, their merged probabilities [kept, K]).

    Class-agnostic greedy NMS by each box's best probability (as `dedupe`). A character detected
    twice under two classes (per-class NMS keeps both) is one character whose class probabilities
    are the elementwise maximum of the merged boxes', scaled down to sum to at most 1: each
    survivor of per-class NMS is the best evidence for its class at that place, so both classes
    stay open to the grammar and the lexicon instead of the weaker one becoming a false positive.
    """
    probs = np.asarray(probs, dtype=np.float64)
    scores = probs.max(axis=1) if len(probs) else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    ious = iou_xywh(boxes, boxes)
    if not (np.triu(ious, k=1) > iou_threshold).any():  # the rule: nothing to merge
        kept = probs[order]
        return order.astype(np.int64), kept / np.maximum(1.0, kept.sum(axis=1, keepdims=True))
    keep: list[int] = []
    merged: list[np.ndarray] = []
    taken = np.zeros(len(order), dtype=bool)
    for i in order:
        if taken[i]:
            continue
        group = ~taken & (ious[i] > iou_threshold)
        group[i] = True
        taken |= group
        row = probs[group].max(axis=0)
        keep.append(int(i))
        merged.append(row / max(1.0, row.sum()))
    return np.array(keep, dtype=np.int64), np.array(merged).reshape(len(keep), probs.shape[1])


def billet_layout(boxes: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's characters for decoding: (indices into the input, probabilities [n, K], detected
    row of each), duplicates merged (`merge_duplicates`) and in reading order."""
    keep, merged = merge_duplicates(boxes, probs)
    if len(keep) == 0:
        return keep, merged, np.zeros(0, dtype=np.int64)
    rows = reading_order(np.asarray(boxes, dtype=np.float64)[keep])
    order = np.concatenate(rows)
    row_of = np.concatenate([np.full(len(r), k) for k, r in enumerate(rows)])
    return keep[order], merged[order], row_of


def image_batch(image: dict, lexicon: dict[str, list[str]]) -> str | None:
    """The lexicon batch of a test image: its `batch` attribute, or "" for a lexicon without batches."""
    if set(lexicon) == {""}:
        return ""
    batch = image.get("batch")
    return None if batch is None else str(batch)


VARIANTS = ("plain", "pattern", "lexicon")


def read_billets(
    coco_gt: dict,
    detections: list[dict],
    *,
    score_threshold: float,
    pattern: IdPattern | None = None,
    lexicon: dict[str, list[str]] | None = None,
    miss_probability: float | None = None,
    decoder_min_score: float | None = None,
) -> list[dict]:
    """Per image: the ID read by each decoder (`billetjax.evaluation.id_decoder`) with its
    confidence, and whether it equals `billet_id`.

    The plain reading concatenates the detections at or above `score_threshold` (the paper's
    reading); the pattern and lexicon decoders read every detection at or above
    `decoder_min_score` (None: `score_threshold`), since a weaker duplicate is the runner-up
    class of its character and a weak stray box costs little to drop.

    Records (image order of the file): `image_id`, `billet_id`, `has_id`, and per variant v of
    `VARIANTS`: `read_{v}` (None: no reading; pattern without `pattern`, lexicon without
    `lexicon`), `confidence_{v}`, `correct_{v}`. `read` and `correct` are the plain reading's.
    An image whose batch has no lexicon entry is read by the pattern decoder in the lexicon column.
    """
    from billetjax.evaluation.id_decoder import GrammarDecoder, LexiconDecoder, plain_reading

    if lexicon and miss_probability is None:
        raise ValueError("read_billets: a lexicon needs the detector's miss_probability "
                         "(evaluation.id_reading.miss_probability)")
    check_detections(coco_gt, detections)
    categories = sorted(coco_gt["categories"], key=lambda c: int(c["id"]))
    category_ids = [int(c["id"]) for c in categories]
    names = [str(c["name"]) for c in categories]
    grammar = GrammarDecoder(pattern, names) if pattern is not None else None
    lexicons = {b: LexiconDecoder(ids, names, miss_probability) for b, ids in (lexicon or {}).items()}
    floor = score_threshold if decoder_min_score is None else float(decoder_min_score)
    per_image: dict[int, list[dict]] = {int(img["id"]): [] for img in coco_gt["images"]}
    for det in detections:
        if float(det["score"]) >= min(score_threshold, floor):
            per_image[int(det["image_id"])].append(det)

    def layout(dets: list[dict], threshold: float):
        dets = [d for d in dets if float(d["score"]) >= threshold]
        boxes = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
        _, probs, rows = billet_layout(boxes, class_probabilities(dets, category_ids))
        return probs, rows

    records = []
    for img in coco_gt["images"]:
        dets = per_image[int(img["id"])]
        truth = normalise_id(img.get("billet_id", "") or "")
        probs, rows = layout(dets, score_threshold)
        readings = {"plain": plain_reading(probs, names), "pattern": None, "lexicon": None}
        if (grammar is not None or lexicons) and floor != score_threshold:
            probs, rows = layout(dets, floor)
        if grammar is not None:
            readings["pattern"] = grammar.decode(probs, rows)
        if lexicons:
            batch = image_batch(img, lexicons)
            decoder = lexicons.get(batch) if batch is not None else None
            readings["lexicon"] = decoder.decode(probs) if decoder is not None else readings["pattern"]
        record = {"image_id": int(img["id"]), "billet_id": truth, "has_id": bool(truth)}
        for v, reading in readings.items():
            text = reading.text if reading is not None else None
            record[f"read_{v}"] = text
            record[f"confidence_{v}"] = reading.confidence if reading is not None else None
            record[f"correct_{v}"] = bool(truth) and text == truth
        record["read"], record["correct"] = record["read_plain"], record["correct_plain"]
        records.append(record)
    return records
