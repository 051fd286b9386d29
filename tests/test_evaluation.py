"""Digit metrics, mAP, billet-ID reading and bootstrap on cases computed by hand."""

import math

import numpy as np
import pytest

from billetjax.evaluation import IdPattern, digit_metrics, map50, match_detections, read_billets, reading_order
from billetjax.evaluation.billet_id import text_angle
from billetjax.evaluation.id_decoder import GrammarDecoder
from billetjax.evaluation.bootstrap import bootstrap_intervals, resample_weights, seed_interval
from billetjax.evaluation.metrics import iou_xywh, percentages

CATEGORIES = [{"id": d + 1, "name": str(d)} for d in range(10)]
# The paper's IoU (§3.2) and our operating point, as the config's defaults set them.
THRESHOLDS = {"iou_threshold": 0.5, "score_threshold": 0.5}


def gt(images: dict[int, list[tuple[list[float], int]]], billet_ids: dict[int, str] | None = None) -> dict:
    """A COCO ground truth: {image id: [(bbox, category id), ...]}."""
    anns, next_id = [], 1
    recs = []
    for image_id, boxes in images.items():
        recs.append({"id": image_id, "file_name": f"{image_id}.png", "width": 200, "height": 100,
                     "billet_id": (billet_ids or {}).get(image_id, "")})
        for bbox, cat in boxes:
            anns.append({"id": next_id, "image_id": image_id, "category_id": cat, "bbox": bbox,
                         "area": bbox[2] * bbox[3], "iscrowd": 0})
            next_id += 1
    return {"images": recs, "annotations": anns, "categories": CATEGORIES}


def det(image_id, bbox, cat, score, **extra):
    return {"image_id": image_id, "category_id": cat, "bbox": bbox, "score": score, **extra}


# Seven images; the outcome of each detection is worked out by hand beside it.
HAND_GT = gt({
    1: [([0, 0, 10, 10], 2), ([20, 0, 10, 10], 3), ([40, 0, 10, 10], 4)],
    2: [([0, 0, 10, 10], 1)],                      # no detection at all: 1 FN
    3: [],                                         # no ground truth
    4: [([0, 0, 10, 10], 1), ([4, 0, 10, 10], 2)],  # two GT boxes at equal IoU from one detection
    5: [([0, 0, 10, 10], 7)],
    6: [([0, 0, 10, 10], 1)],
    7: [([0, 0, 10, 10], 10)],
})
HAND_DETECTIONS = [
    det(1, [0, 0, 10, 10], 2, 0.9),    # TP
    det(1, [1, 0, 10, 10], 2, 0.8),    # duplicate of the TP: its box is taken -> FP
    det(1, [20, 0, 10, 10], 5, 0.7),   # right place, wrong label -> MC
    det(1, [40, 0, 10, 10], 4, 0.3),   # below the score threshold: ignored, so GT 3 is missed
    det(3, [5, 5, 10, 10], 3, 0.9),    # image without GT -> FP
    det(4, [2, 0, 10, 10], 2, 0.9),    # IoU 2/3 with both; tie -> the earlier GT (label 1) -> MC
    det(5, [0, 0, 10, 10], 7, 0.6),    # exact and right, but scored lower: comes second -> FP
    det(5, [2, 0, 10, 10], 8, 0.9),    # first by score, IoU 2/3, wrong label -> MC
    det(6, [0, 5, 10, 10], 1, 0.9),    # IoU 1/3 < 0.5 -> FP, and GT missed
    det(7, [0, 0, 10, 10], 10, 0.99),  # TP: the only billet with every character right
]


def test_hand_computed_metrics():
    m = digit_metrics(HAND_GT, HAND_DETECTIONS)
    # G = 9 characters; TP 2, MC 3, FP 4; billets with GT: 6, all correct: image 7 only.
    assert (m["n_characters"], m["TP_n"], m["MC_n"], m["FN_n"], m["FP_n"], m["CB_n"]) == (9, 2, 3, 7, 4, 1)
    assert m["n_billets"] == 6 and m["n_images"] == 7 and m["n_detections"] == 9
    assert m["TP"] == pytest.approx(200 / 9)
    assert m["MC"] == pytest.approx(300 / 9)
    assert m["FN"] == pytest.approx(700 / 9)
    assert m["FP"] == pytest.approx(400 / 9)
    assert m["CB"] == pytest.approx(100 / 6)


def test_tie_goes_to_earlier_annotation_and_score_order_is_stable():
    matches = {mt.image_id: mt for mt in match_detections(HAND_GT, HAND_DETECTIONS, **THRESHOLDS)}
    assert list(matches[4].det_match) == [0]
    assert list(matches[4].det_outcome) == ["MC"]
    # Image 5: the 0.9 detection (second in the file) is taken first.
    assert list(matches[5].det_scores) == [0.9, 0.6]
    assert list(matches[5].det_outcome) == ["MC", "FP"]
    # Equal scores keep file order: the first of two identical detections gets the box.
    same = [det(7, [0, 0, 10, 10], 9, 0.8), det(7, [0, 0, 10, 10], 10, 0.8)]
    (m7,) = [mt for mt in match_detections(HAND_GT, same, **THRESHOLDS) if mt.image_id == 7]
    assert list(m7.det_outcome) == ["MC", "FP"]


def test_thresholds_are_inclusive():
    g = gt({1: [([0, 0, 10, 10], 1)]})
    # IoU exactly 0.5 (half the box) and score exactly 0.5 both count.
    m = digit_metrics(g, [det(1, [0, 0, 10, 5], 1, 0.5)])
    assert m["TP"] == 100.0 and m["FP"] == 0.0 and m["CB"] == 100.0
    m = digit_metrics(g, [det(1, [0, 0, 10, 5], 1, 0.4999)])
    assert m["TP"] == 0.0 and m["FN"] == 100.0 and m["n_detections"] == 0
    m = digit_metrics(g, [det(1, [0, 0, 10, 5], 1, 0.9)], iou_threshold=0.51)
    assert m["TP"] == 0.0 and m["FP"] == 100.0


def test_no_detections_and_no_ground_truth():
    m = digit_metrics(HAND_GT, [])
    assert m["TP"] == 0.0 and m["FN"] == 100.0 and m["FP"] == 0.0 and m["CB"] == 0.0
    empty = gt({1: []})
    m = digit_metrics(empty, [det(1, [0, 0, 5, 5], 1, 0.9)])
    assert math.isnan(m["TP"]) and math.isnan(m["CB"]) and m["FP_n"] == 1


def test_bad_detections_are_refused():
    with pytest.raises(ValueError, match="image_id 99"):
        digit_metrics(HAND_GT, [det(99, [0, 0, 10, 10], 1, 0.9)])
    with pytest.raises(ValueError, match="category_id 42"):
        digit_metrics(HAND_GT, [det(1, [0, 0, 10, 10], 42, 0.9)])
    with pytest.raises(ValueError, match="missing 'score'"):
        digit_metrics(HAND_GT, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}])


def test_iou_against_hand_values():
    ious = iou_xywh(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]]))
    np.testing.assert_allclose(ious, [[1.0, 50 / 150, 0.0]])


def test_count_matrix_by_hand():
    # Per image of HAND_GT, worked out from the comments beside HAND_DETECTIONS, in COUNT_COLUMNS
    # order: n_gt, tp, mc, fp, n_det (kept by the score threshold), all_correct, has_gt.
    from billetjax.evaluation.metrics import COUNT_COLUMNS, count_matrix

    assert COUNT_COLUMNS == ("n_gt", "tp", "mc", "fp", "n_det", "all_correct", "has_gt")
    expected = [
        [3, 1, 1, 1, 3, 0, 1],  # image 1: TP, duplicate FP, MC; the 0.3 detection dropped
        [1, 0, 0, 0, 0, 0, 1],  # image 2: nothing detected
        [0, 0, 0, 1, 1, 0, 0],  # image 3: no ground truth, one FP
        [2, 0, 1, 0, 1, 0, 1],  # image 4: tie -> MC
        [1, 0, 1, 1, 2, 0, 1],  # image 5: MC first by score, then FP
        [1, 0, 0, 1, 1, 0, 1],  # image 6: IoU 1/3 -> FP
        [1, 1, 0, 0, 1, 1, 1],  # image 7: read completely
    ]
    np.testing.assert_array_equal(count_matrix(match_detections(HAND_GT, HAND_DETECTIONS, **THRESHOLDS)), expected)


def test_percentages_of_hand_totals():
    # The bootstrap and the tables go through percentages() on summed counts, with leading axes.
    totals = np.array([
        [9, 2, 3, 4, 9, 1, 6],  # HAND_GT's totals: TP 2/9, MC 3/9, FN 7/9, FP 4/9, CB 1/6
        [4, 4, 0, 1, 5, 2, 2],  # every character read, one FP: CB still 2/2 (FP does not count)
        [0, 0, 0, 3, 3, 0, 0],  # no ground truth: every ratio undefined
    ])
    p = percentages(totals)
    np.testing.assert_allclose(p["TP"][:2], [200 / 9, 100.0])
    np.testing.assert_allclose(p["MC"][:2], [300 / 9, 0.0])
    np.testing.assert_allclose(p["FN"][:2], [700 / 9, 0.0])
    np.testing.assert_allclose(p["FP"][:2], [400 / 9, 25.0])
    np.testing.assert_allclose(p["CB"][:2], [100 / 6, 100.0])
    assert all(math.isnan(p[k][2]) for k in ("TP", "MC", "FN", "FP", "CB"))


def test_a_false_positive_does_not_spoil_a_complete_billet():
    # CB counts billets whose every character is a TP; an extra detection elsewhere is an FP only.
    g = gt({1: [([0, 0, 10, 10], 1), ([20, 0, 10, 10], 2)]})
    m = digit_metrics(g, [det(1, [0, 0, 10, 10], 1, 0.9), det(1, [20, 0, 10, 10], 2, 0.9),
                          det(1, [60, 0, 10, 10], 3, 0.9)])
    assert (m["TP_n"], m["FP_n"], m["CB_n"]) == (2, 1, 1) and m["FP"] == 50.0 and m["CB"] == 100.0


# ------------------------------------------------------------------ mAP (pycocotools)


def test_map_perfect_empty_and_hand_case():
    perfect = [det(a["image_id"], a["bbox"], a["category_id"], 1.0) for a in HAND_GT["annotations"]]
    assert map50(HAND_GT, perfect) == pytest.approx(1.0)
    assert map50(HAND_GT, []) == 0.0
    # One category, two GT boxes; detections by score: hit, FP, hit. Precision is 1 up to recall 0.5
    # and 2/3 after it; COCO's 101 recall points: 51 at 1, 50 at 2/3.
    g = gt({1: [([0, 0, 10, 10], 1), ([50, 0, 10, 10], 1)]})
    dets = [det(1, [0, 0, 10, 10], 1, 0.9), det(1, [100, 50, 10, 10], 1, 0.8), det(1, [50, 0, 10, 10], 1, 0.7)]
    assert map50(g, dets) == pytest.approx((51 + 50 * 2 / 3) / 101)


# ------------------------------------------------------------------ billet-ID reading


def two_row_layout(text_rows: list[str], angle_deg: float, centre=(100.0, 50.0)):
    """Character boxes of a two-row ID rotated about `centre`: [(bbox, char)] in reading order."""
    a = math.radians(angle_deg)
    out = []
    for r, row in enumerate(text_rows):
        for c, char in enumerate(row):
            x, y = 30.0 + 14.0 * c - centre[0], 25.0 + 30.0 * r - centre[1]
            cx = centre[0] + math.cos(a) * x - math.sin(a) * y
            cy = centre[1] + math.sin(a) * x + math.cos(a) * y
            out.append(([cx - 5, cy - 8, 10, 16], char))
    return out


@pytest.mark.parametrize("angle", [-8.0, 0.0, 6.0])
def test_reading_order_of_rotated_two_rows(angle):
    layout = two_row_layout(["123456", "78901"], angle)
    shuffled = np.random.default_rng(0).permutation(len(layout))
    boxes = np.array([layout[i][0] for i in shuffled])
    order = np.concatenate(reading_order(boxes))
    assert "".join(layout[shuffled[i]][1] for i in order) == "12345678901"
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    assert math.degrees(text_angle(centres, 16.0)) == pytest.approx(angle, abs=0.2)


def test_read_billets_plain_with_duplicates_and_low_scores():
    layout = two_row_layout(["123456", "78901"], 5.0)
    g = gt({1: [(b, int(ch) + 1) for b, ch in layout], 2: [(b, int(ch) + 1) for b, ch in layout]},
           {1: "123456\n78901", 2: "12345678901"})
    dets = [det(1, b, int(ch) + 1, 0.9) for b, ch in layout[::-1]]
    dets.append(det(1, [layout[0][0][0] + 1, *layout[0][0][1:]], 8, 0.6))  # duplicate: de-duplicated
    dets.append(det(1, [180, 80, 10, 16], 3, 0.2))                         # below threshold
    dets += [det(2, b, int(ch) + 1, 0.9) for b, ch in layout if ch != "5"]  # one character missed
    records = read_billets(g, dets, score_threshold=THRESHOLDS["score_threshold"])
    assert [r["read"] for r in records] == ["12345678901", "1234678901"]
    assert [r["correct"] for r in records] == [True, False]
    assert records[0]["read_pattern"] is None and records[0]["read_lexicon"] is None


def probs(rows: list[dict[str, float]]) -> np.ndarray:
    p = np.zeros((len(rows), 10))
    for i, row in enumerate(rows):
        for ch, v in row.items():
            p[i, int(ch)] = v
    return p


def decode_with_pattern(p, names, pattern):
    """The grammar decoder on boxes in one detected row."""
    return GrammarDecoder(pattern, names).decode(p, np.zeros(len(p), dtype=int)).text


def test_pattern_picks_best_valid_reading():
    names = [str(d) for d in range(10)]
    pattern = IdPattern.from_config({"positions": ["1", "0123456789", "2"]}, names)
    p = probs([{"7": 0.6, "1": 0.3}, {"0": 0.9}, {"2": 0.5, "7": 0.4}])
    assert decode_with_pattern(p, names, pattern) == "102"
    # A weak extra box (most likely background) is dropped to fit the length.
    p = probs([{"7": 0.6, "1": 0.3}, {"5": 0.2}, {"0": 0.9}, {"2": 0.95}])
    assert decode_with_pattern(p, names, pattern) == "102"
    # Too few boxes: no valid reading.
    assert decode_with_pattern(p[:2], names, pattern) is None
    # Several lengths compete on the same total: the sure fourth box is kept.
    pattern = IdPattern.from_config({"length": [3, 4], "alphabet": "0123456789"}, names)
    p = probs([{"1": 0.9}, {"2": 0.9}, {"3": 0.9}, {"4": 0.9}])
    assert decode_with_pattern(p, names, pattern) == "1234"
    assert pattern.matches("123") and not pattern.matches("12")


def test_pattern_reading_uses_class_scores_in_read_billets():
    g = gt({1: [([10, 10, 10, 16], 2), ([24, 10, 10, 16], 1)]}, {1: "10"})
    dets = [
        det(1, [10, 10, 10, 16], 8, 0.55, class_scores=[0.0, 0.4, 0, 0, 0, 0, 0, 0.55, 0, 0]),  # "7" over "1"
        det(1, [24, 10, 10, 16], 1, 0.9),  # no class_scores: its label and score
    ]
    pattern = IdPattern.from_config({"positions": ["1", "0"]}, [str(d) for d in range(10)])
    (record,) = read_billets(g, dets, score_threshold=THRESHOLDS["score_threshold"], pattern=pattern)
    assert record["read"] == "70" and not record["correct"]
    assert record["read_pattern"] == "10" and record["correct_pattern"]


def test_pattern_config_errors():
    names = [str(d) for d in range(10)]
    assert IdPattern.from_config(None, names) is None
    with pytest.raises(ValueError, match="not categories"):
        IdPattern.from_config({"length": 3, "alphabet": "01A"}, names)
    with pytest.raises(ValueError, match="positions"):
        IdPattern.from_config({"length": 2, "positions": ["1", "2", "3"]}, names)


# ------------------------------------------------------------------ bootstrap


def test_bootstrap_deterministic_and_contains_point():
    from billetjax.evaluation.metrics import count_matrix

    rng = np.random.default_rng(1)
    images = {i: [([10 * j, 0, 8, 8], 1) for j in range(5)] for i in range(1, 41)}
    g = gt(images)
    dets = [det(a["image_id"], a["bbox"], a["category_id"], 0.9) for a in g["annotations"] if rng.random() < 0.7]
    counts = count_matrix(match_detections(g, dets, **THRESHOLDS))
    point = percentages(counts.sum(axis=0))
    a = bootstrap_intervals(counts, percentages, 500, seed=7)
    b = bootstrap_intervals(counts, percentages, 500, seed=7)
    c = bootstrap_intervals(counts, percentages, 500, seed=8)
    assert a == b and a != c
    for key in ("TP", "FN", "CB"):
        lo, hi = a[key]
        assert lo < float(point[key]) < hi
    assert a["MC"] == (0.0, 0.0)
    # Several seeds on the same billets: identical seeds give the one-seed interval.
    assert bootstrap_intervals(np.stack([counts, counts]), percentages, 500, seed=7) == a
    weights = resample_weights(40, 3, seed=0)
    assert weights.shape == (3, 40) and (weights.sum(axis=1) == 40).all()


def test_seed_interval_by_hand():
    mean, sd, lo, hi = seed_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2) from tables
    assert (mean, sd) == (2.0, 1.0)
    assert lo == pytest.approx(2.0 - half) and hi == pytest.approx(2.0 + half)
    mean, sd, lo, hi = seed_interval([5.0])
    assert mean == 5.0 and math.isnan(sd) and math.isnan(lo)


def test_reading_order_with_jittered_characters():
    # A poorly stamped billet of the simulator (rows tilted by about -9°, single characters
    # jittered): local nearest-neighbour directions point the wrong way here, the rows do not.
    boxes = np.array([
        [101.8, 128.9, 16.0, 24.9], [117.1, 126.6, 16.7, 24.2], [137.4, 119.7, 15.6, 24.0],
        [149.6, 124.1, 13.5, 23.0], [173.5, 114.9, 14.8, 22.8], [191.8, 116.9, 14.7, 24.0],
        [109.5, 159.2, 12.1, 26.4], [124.9, 162.5, 15.1, 24.5], [153.0, 160.6, 13.2, 23.8],
        [162.5, 154.9, 20.6, 22.3], [183.1, 148.0, 15.3, 24.1],
    ])
    labels = "22676177455"
    order = np.concatenate(reading_order(boxes[::-1]))
    assert "".join(labels[::-1][i] for i in order) == labels


def test_class_scores_conditional_or_joint():
    from billetjax.evaluation.billet_id import class_probabilities

    ids = list(range(1, 11))
    joint = det(1, [0, 0, 5, 5], 8, 0.55, class_scores=[0, 0.4, 0, 0, 0, 0, 0, 0.55, 0, 0])
    # A softmax over the characters alone: P(char) = 0.3 / 0.6 = 0.5, so "7" 0.3, "1" 0.2, background 0.5.
    conditional = det(1, [0, 0, 5, 5], 8, 0.3, class_scores=[0, 0.4, 0, 0, 0, 0, 0, 0.6, 0, 0])
    plain = det(1, [0, 0, 5, 5], 3, 0.7)
    p = class_probabilities([joint, conditional, plain], ids)
    np.testing.assert_allclose(p[0], probs([{"1": 0.4, "7": 0.55}])[0])
    np.testing.assert_allclose(p[1], probs([{"1": 0.2, "7": 0.3}])[0])
    np.testing.assert_allclose(p[2], probs([{"2": 0.7}])[0])
    with pytest.raises(ValueError, match="class_scores has 3 entries"):
        class_probabilities([det(1, [0, 0, 5, 5], 1, 0.9, class_scores=[1, 0, 0])], ids)
