"""Whole-ID reading: the grammar and lexicon decoders, the reject option and the plant's metrics,
on billets built by hand (expected values counted by hand in the comments)."""

import numpy as np
import pandas as pd
import pytest

from billetjax import coco as cc
from billetjax.data.billet_ids import (
    HEAT_LENGTH, NEXT_HEAT_IN_LEXICON, DIGITS_ONLY, production_schedule, schedule_lexicon,
)
from billetjax.data.testsets import write_test_set_lexicons
from billetjax.data.lexicon import load_lexicon
from billetjax.evaluation.billet_id import IdPattern, merge_duplicates, read_billets
from billetjax.evaluation.evaluate import RUN_COLUMNS, evaluate
from billetjax.evaluation.id_decoder import GrammarDecoder, LexiconDecoder
from billetjax.evaluation.id_metrics import outcomes, read_at_misread, read_misread_curve

NAMES = [str(d) for d in range(10)]
CATEGORIES = [{"id": d + 1, "name": str(d)} for d in range(10)]
# The simulated plant's grammar (config.yaml's evaluation.id_pattern).
PLANT = {"rows": [6, [5, 6]], "positions": ["123456789", *["0123456789"] * 5, "12345678"]}
TRUTH = "84351371823"
READING = {"iou_threshold": 0.5, "score_threshold": 0.5, "bootstrap_samples": 0, "id_pattern": PLANT,
           "id_reading": {"min_confidence": 0.6, "min_score": 0.5, "miss_probability": 0.05, "misread_levels_pct": [0.0, 20.0]}}
SCORE, MISS = READING["score_threshold"], READING["id_reading"]["miss_probability"]


def stamped(billet_id: str) -> list[tuple[list[float], str]]:
    """Boxes of a billet ID laid out as stamped: 6 characters, then the rest in a second row."""
    rows = [billet_id[:HEAT_LENGTH], billet_id[HEAT_LENGTH:]]
    return [([20.0 + 16.0 * c, 20.0 + 30.0 * r, 12.0, 20.0], ch)
            for r, row in enumerate(rows) for c, ch in enumerate(row)]


def billet(image_id: int, billet_id: str, **attributes) -> tuple[dict, list[dict]]:
    image = {"id": image_id, "file_name": f"{image_id}.png", "width": 240, "height": 100,
             "billet_id": billet_id, **attributes}
    anns = [{"id": 100 * image_id + k, "image_id": image_id, "category_id": int(ch) + 1, "bbox": box,
             "area": box[2] * box[3], "iscrowd": 0} for k, (box, ch) in enumerate(stamped(billet_id))]
    return image, anns


def coco(*billets) -> dict:
    return {"images": [b[0] for b in billets], "annotations": [a for b in billets for a in b[1]],
            "categories": CATEGORIES}


def det(image_id, box, char, score, class_scores=None):
    out = {"image_id": image_id, "category_id": int(char) + 1, "bbox": list(box), "score": score}
    if class_scores is not None:
        out["class_scores"] = list(class_scores)
    return out


def clean(image_id: int, billet_id: str, score: float = 0.95) -> list[dict]:
    return [det(image_id, box, ch, score) for box, ch in stamped(billet_id)]


def extra_digit(image_id: int) -> list[dict]:
    """TRUTH with an extra '8' between its '4' and '3' (as the default study read one billet of
    test set 2: 848351371823), weaker than the real characters, overlapping neither enough to be
    merged with it."""
    dets = clean(image_id, TRUTH)
    x = 20.0 + 16.0 * 1.5
    dets.append(det(image_id, [x, 21.0, 12.0, 20.0], "8", 0.7))
    return dets


def test_grammar_removes_an_extra_digit():
    gt = coco(billet(1, TRUTH))
    pattern = IdPattern.from_config(PLANT, NAMES)
    (record,) = read_billets(gt, extra_digit(1), score_threshold=SCORE, pattern=pattern)
    assert record["read_plain"] == "848351371823" and not record["correct_plain"]
    assert record["read_pattern"] == TRUTH and record["correct_pattern"]
    # The first row holds 7 boxes for 6 places: one is dropped. Dropping the extra '8' weighs
    # bg 0.3 x 0.95^6; dropping any of the 6 others (6 different, all valid strings) 0.05 x 0.7 x 0.95^5.
    assert record["confidence_pattern"] == pytest.approx(0.3 * 0.95 / (0.3 * 0.95 + 6 * 0.05 * 0.7))
    # Without rows a 12-character ID is as valid as an 11-character one: the extra digit stays.
    lengths_only = IdPattern.from_config({"length": [11, 12], "positions": PLANT["positions"]}, NAMES)
    assert read_billets(gt, extra_digit(1), score_threshold=SCORE, pattern=lengths_only)[0]["read_pattern"] == "848351371823"


def test_grammar_without_enough_characters_has_no_reading():
    gt = coco(billet(1, TRUTH))
    pattern = IdPattern.from_config(PLANT, NAMES)
    (record,) = read_billets(gt, clean(1, TRUTH)[1:], score_threshold=SCORE, pattern=pattern)  # the first character missed
    assert record["read_pattern"] is None and record["confidence_pattern"] == 0.0


def test_grammar_drops_a_spurious_row_whole():
    dets = clean(1, TRUTH) + [det(1, [60.0, 85.0, 12.0, 12.0], "1", 0.55)]  # a scratch below the ID
    (record,) = read_billets(coco(billet(1, TRUTH)), dets, score_threshold=SCORE,
                             pattern=IdPattern.from_config(PLANT, NAMES))
    assert record["read_pattern"] == TRUTH


def test_the_decoders_read_a_weaker_duplicate_as_the_runner_up():
    """As the default study read one billet of test set 2: a '1' (TRUTH's fifth character here)
    read as '7' at 0.96, the same stamp as '1' at 0.49 (class probability 0.70), below the plain
    reading's 0.5. Reading from 0.3 on, the grammar merges the two boxes: '7' and '1' stay open
    (joint probabilities: the '1' box's scaled to its score, 0.49; elementwise maximum, scaled to
    sum to 1) and the misreading's confidence falls from 0.96 to 0.66."""
    gt = coco(billet(1, TRUTH))
    pattern = IdPattern.from_config(PLANT, NAMES)
    dets = [det(1, box, ch, 0.999, np.eye(10)[int(ch)] * 0.999) for box, ch in stamped(TRUTH)]
    box = dets[4]["bbox"]
    seven = np.zeros(10)
    seven[[7, 1]] = 0.96, 0.04
    one = np.zeros(10)
    one[[1, 7]] = 0.70, 0.29
    dets[4] = det(1, box, "7", 0.96, seven)
    dets.append(det(1, [box[0] + 0.5, box[1] + 0.5, box[2], box[3]], "1", 0.49, one))
    strict, lenient = (read_billets(gt, dets, score_threshold=SCORE, pattern=pattern, decoder_min_score=floor)[0]
                       for floor in (None, 0.3))
    assert strict["read_pattern"] == lenient["read_pattern"] == "84357371823"  # still the detector's '7'
    assert strict["read_plain"] == lenient["read_plain"] == "84357371823"
    assert strict["confidence_pattern"] == pytest.approx(0.96 / (0.96 + 0.04), rel=1e-3)
    assert lenient["confidence_pattern"] == pytest.approx(0.96 / (0.96 + 0.49), rel=1e-3)


def unreadable_twice(image_id: int) -> list[dict]:
    """TRUTH with its third character ('3') not detected at all and its ninth ('8') detected with
    no idea of its class (uniform class scores)."""
    dets = []
    for k, (box, ch) in enumerate(stamped(TRUTH)):
        if k == 2:
            continue
        dets.append(det(image_id, box, ch, 0.5, [0.1] * 10) if k == 8 else det(image_id, box, ch, 0.95))
    return dets


def test_lexicon_recovers_a_billet_with_two_unreadable_characters():
    lexicon = {"843513": [TRUTH, "84351371824", "84351381823", "84351471823", "84351361823"]}
    gt = coco(billet(1, TRUTH, batch="843513"))
    (record,) = read_billets(gt, unreadable_twice(1), score_threshold=SCORE,
                             pattern=IdPattern.from_config(PLANT, NAMES), lexicon=lexicon, miss_probability=MISS)
    assert record["read_pattern"] is None  # 10 characters for 11 places
    assert record["read_lexicon"] == TRUTH and record["correct_lexicon"]
    # Every distractor contradicts a character read at 0.95: dropping that box (0.05) and missing
    # the candidate's character (0.05) instead, 0.0025 / 0.95 of the truth's weight (the other
    # alignments add little on either side).
    assert record["confidence_lexicon"] == pytest.approx(1 / (1 + 4 * 0.0025 / 0.95), abs=1e-4)
    # A distractor that differs only where nothing was read ties with the truth: rejected.
    tie = {"843513": [TRUTH, "84351371723"]}
    (record,) = read_billets(gt, unreadable_twice(1), score_threshold=SCORE, lexicon=tie, miss_probability=MISS)
    assert record["confidence_lexicon"] == pytest.approx(0.5, abs=1e-4)
    # An image whose batch has no lexicon entry is read by the grammar.
    other = coco(billet(1, TRUTH, batch="999999"))
    (record,) = read_billets(other, extra_digit(1), score_threshold=SCORE,
                             pattern=IdPattern.from_config(PLANT, NAMES), lexicon=lexicon, miss_probability=MISS)
    assert record["read_lexicon"] == record["read_pattern"] == TRUTH


def test_a_billet_without_detections():
    gt = coco(billet(1, TRUTH, batch="h"))
    (record,) = read_billets(gt, [], score_threshold=SCORE, pattern=IdPattern.from_config(PLANT, NAMES),
                             lexicon={"h": [TRUTH, "84351371824"]}, miss_probability=MISS)
    assert (record["read_plain"], record["confidence_plain"]) == (None, 0.0)
    assert record["read_pattern"] is None
    # every candidate missed whole: a tie between the two
    assert record["confidence_lexicon"] == pytest.approx(0.5)


def test_lexicon_likelihood_by_hand():
    # Two boxes; candidate "12": keep both (0.9 x 0.8), or any other alignment using drops
    # (bg 0.1, 0.2) and misses (q) with the spelt characters' probabilities (0 here except as read).
    decoder = LexiconDecoder(["12", "1"], NAMES, miss_probability=0.1)
    p = np.zeros((2, 10))
    p[0, 1], p[1, 2] = 0.9, 0.8
    q = 0.1
    # "12": 1<-box0, 2<-box1 (0.9 x 0.8); 1<-box0, box1 dropped, 2 missed (0.9 x 0.2 x q);
    #       box0 dropped, 1 missed, 2<-box1 (0.1 x q x 0.8); both dropped, both missed (0.1 x 0.2 x q^2).
    twelve = 0.9 * 0.8 + 0.9 * 0.2 * q + 0.1 * q * 0.8 + 0.1 * 0.2 * q * q
    # "1": 1<-box0, box1 dropped (0.9 x 0.2); both dropped, 1 missed (0.1 x 0.2 x q).
    one = 0.9 * 0.2 + 0.1 * 0.2 * q
    assert np.exp(decoder.log_likelihoods(p)) == pytest.approx([twelve, one])
    reading = decoder.decode(p)
    assert reading.text == "12" and reading.confidence == pytest.approx(twelve / (twelve + one))


def test_reject_option_refuses_an_ambiguous_reading():
    # The fourth character ('5') is read as '5' or '6', half and half; both fit the grammar.
    gt = coco(billet(1, TRUTH), billet(2, TRUTH))
    ambiguous = [det(1, box, ch, 0.95, [0.5 if d in (5, 6) else 0.0 for d in range(10)]) if k == 3
                 else det(1, box, ch, 0.95) for k, (box, ch) in enumerate(stamped(TRUTH))]
    records = read_billets(gt, ambiguous + clean(2, TRUTH), score_threshold=SCORE,
                           pattern=IdPattern.from_config(PLANT, NAMES))
    assert [r["confidence_pattern"] for r in records] == pytest.approx([0.5, 1.0])
    correct = np.array([r["correct_pattern"] for r in records])
    confidence = np.array([r["confidence_pattern"] for r in records])
    # At min_confidence 0.6 the ambiguous billet goes to a human; the clear one is read.
    assert outcomes(correct, confidence, 0.6).tolist() == [[0, 0, 1], [1, 0, 0]]
    result = evaluate(gt, ambiguous + clean(2, TRUTH), READING, 0)
    assert result["metrics"]["id_reject_pattern"] == 50.0 and result["metrics"]["id_read_pattern"] == 50.0


def test_duplicate_under_two_classes_is_one_character():
    boxes = np.array([[10, 10, 12, 20], [11, 10, 12, 20], [40, 10, 12, 20]], dtype=float)
    probs = np.zeros((3, 10))
    probs[0, 3], probs[1, 8], probs[2, 1] = 0.6, 0.55, 0.9
    keep, merged = merge_duplicates(boxes, probs)
    assert keep.tolist() == [2, 0]  # by best probability
    assert merged[1, 3] == pytest.approx(0.6 / 1.15) and merged[1, 8] == pytest.approx(0.55 / 1.15)
    # The grammar then takes the class it allows: '8' where only 8 may stand.
    pattern = IdPattern.from_config({"positions": ["8", "1"]}, NAMES)
    reading = GrammarDecoder(pattern, NAMES).decode(merged[::-1], np.zeros(2, dtype=int))
    assert reading.text == "81"


def test_read_misread_curve_by_hand():
    correct = np.array([True, True, False, True, False, True])
    confidence = np.array([0.9, 0.8, 0.8, 0.6, 0.3, np.nan])  # the last billet has no reading
    curve = read_misread_curve(correct, confidence)
    # thresholds: inf (nothing accepted), 0.9 (1 read), 0.8 (2 read, 1 misread: a tie accepted
    # together), 0.6 (3, 1), 0.3 (3, 2); out of 6 billets.
    assert curve["threshold"].tolist() == [np.inf, 0.9, 0.8, 0.6, 0.3]
    assert curve["read"].tolist() == pytest.approx([0, 100 / 6, 200 / 6, 300 / 6, 300 / 6])
    assert curve["misread"].tolist() == pytest.approx([0, 0, 100 / 6, 100 / 6, 200 / 6])
    assert curve["reject"].tolist() == pytest.approx([100, 500 / 6, 300 / 6, 200 / 6, 100 / 6])
    assert read_at_misread(curve, 0.0) == pytest.approx(100 / 6)
    assert read_at_misread(curve, 20.0) == pytest.approx(50.0)
    assert outcomes(correct, confidence, 0.8).sum(axis=0).tolist() == [2, 1, 3]


def test_per_billet_outcomes_in_the_metrics():
    gt = coco(billet(1, TRUTH, batch="h"), billet(2, "84351371824", batch="h"), billet(3, TRUTH, batch="h"))
    dets = extra_digit(1) + clean(2, "84351371824") + unreadable_twice(3)
    lexicon = {"h": [TRUTH, "84351371824"]}
    result = evaluate(gt, dets, READING, 0, lexicon)
    counts = pd.DataFrame(result["per_image"]["counts"], columns=result["per_image"]["columns"])
    assert list(counts.columns) == list(RUN_COLUMNS)
    for v in ("plain", "pattern", "lexicon"):
        assert (counts[[f"id_read_{v}", f"id_misread_{v}", f"id_reject_{v}"]].sum(axis=1) == counts["has_id"]).all()
    # plain: billet 1 misread (12 characters, 0.95^11 x 0.7 < 0.6: rejected), 2 read (0.95^11 = 0.57:
    # rejected), 3 rejected: all three rejected at 0.6.
    assert counts["id_reject_plain"].tolist() == [1, 1, 1]
    # pattern: billet 1 at 0.576 (rejected), 2 read, 3 no reading; lexicon: all three read.
    assert counts["id_read_pattern"].tolist() == [0, 1, 0] and counts["id_reject_pattern"].tolist() == [1, 0, 1]
    assert counts["id_read_lexicon"].tolist() == [1, 1, 1]
    assert result["metrics"]["id_read_lexicon"] == 100.0
    assert result["metrics"]["id_read_pattern_at_20"] == pytest.approx(200 / 3)
    assert result["metrics"]["id_read_rate_pattern"] == pytest.approx(200 / 3)  # no reject option
    # without a lexicon the lexicon's metrics are undefined, not zero
    assert np.isnan(evaluate(gt, dets, READING, 0)["metrics"]["id_read_lexicon"])


def test_production_schedule_has_the_plant_systematics():
    schedule = production_schedule(np.random.default_rng(4), 120, DIGITS_ONLY)
    pattern = IdPattern.from_config(PLANT, NAMES)
    assert sum(b.imaged for b in schedule) == 120
    assert all(pattern.matches(b.billet_id) for b in schedule)
    heats = list(dict.fromkeys(b.heat for b in schedule))
    assert len(heats) >= 4
    # consecutive heats: the running heat counter
    assert [int(h) for h in heats] == list(range(int(heats[0]), int(heats[0]) + len(heats)))
    for heat in heats:
        ids = [b.billet_id for b in schedule if b.heat == heat]
        assert all(i[:HEAT_LENGTH] == heat for i in ids) and len({len(i) for i in ids}) == 1
        # per strand, consecutive sequence numbers
        for strand in {i[HEAT_LENGTH] for i in ids}:
            numbers = [int(i[HEAT_LENGTH + 1:]) for i in ids if i[HEAT_LENGTH] == strand]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    rows = schedule_lexicon(schedule)
    first = [i for b, i in rows if b == heats[0]]
    own = [b.billet_id for b in schedule if b.heat == heats[0]]
    following = [b.billet_id for b in schedule if b.heat == heats[1]][:NEXT_HEAT_IN_LEXICON]
    assert first == own + following
    assert any(not b.imaged for b in schedule if b.heat == heats[0])  # skipped billets: distractors


def test_test_set_lexicons(tmp_path):
    lexicon = tmp_path / "test_lexicon.csv"
    rows = {"batch": ["a", "a", "b", "c"], "billet_id": ["111", "112", "211", "311"]}
    pd.DataFrame(rows).to_csv(lexicon, index=False)
    sets = [{"images": [{"id": 1, "file_name": "1.png", "batch": "a"}, {"id": 2, "file_name": "2.png", "batch": "c"}]},
            {"images": [{"id": 3, "file_name": "3.png", "batch": "b"}]}]
    outs = [tmp_path / "testset1_lexicon.csv", tmp_path / "testset2_lexicon.csv"]
    write_test_set_lexicons(lexicon, sets, outs)
    assert load_lexicon(outs[0]) == {"a": ["111", "112"], "c": ["311"]}
    assert load_lexicon(outs[1]) == {"b": ["211"]}
    with pytest.raises(cc.CocoError, match=r"test image 4\.png .* has no 'batch' attribute"):
        write_test_set_lexicons(lexicon, [{"images": [{"id": 4, "file_name": "4.png"}]}], outs[:1])
    # no lexicon: a header alone, read back as none
    empty = tmp_path / "none.csv"
    pd.DataFrame(columns=["batch", "billet_id"]).to_csv(empty, index=False)
    write_test_set_lexicons(empty, sets, outs)
    assert load_lexicon(outs[0]) == {}


def test_lexicon_file_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id\n123\n")
    with pytest.raises(ValueError, match=r"bad\.csv: a lexicon needs a 'billet_id' column"):
        load_lexicon(bad)
    blank = tmp_path / "blank.csv"
    blank.write_text("batch,billet_id\na,123\na,\n")
    with pytest.raises(ValueError, match=r"blank\.csv, line 3: empty billet_id"):
        load_lexicon(blank)
    plain = tmp_path / "plain.csv"
    plain.write_text("billet_id\n123 45\n")
    assert load_lexicon(plain) == {"": ["12345"]}  # rows of a stamped ID joined


def test_rows_must_agree_with_length():
    with pytest.raises(ValueError, match="rows .* give IDs of \\[11, 12\\] characters"):
        IdPattern.from_config({"rows": [6, [5, 6]], "length": 11}, NAMES)
    assert IdPattern.from_config(PLANT, NAMES).lengths == (11, 12)


def test_a_users_lexicon_goes_with_the_imported_test_pool(tmp_path, make_config):
    from billetjax.config import glyph_requirement
    from billetjax.data.pools import make_real_pools

    rng = np.random.default_rng(0)
    paths = {}
    for split, batches in (("train", ["x", "x"]), ("test", ["h1", "h2"])):
        folder = tmp_path / "user" / split
        (folder / "images").mkdir(parents=True)
        data = {"images": [], "annotations": [], "categories": CATEGORIES[:4]}
        for i, batch in enumerate(batches, 1):
            image = (rng.random((64, 96, 3)) * 40 + 150).astype(np.uint8)
            data["images"].append({"id": i, "file_name": f"images/{i}.png", "width": 96, "height": 64,
                                   "visibility": "well", "site": "A", "billet_id": "0123", "batch": batch})
            # The ID's characters "0", "1", "2", "3" (category ids 1-4) side by side, placed apart in
            # each image so that no test image passes for a training one.
            y = 6 if split == "train" else 34
            for k in range(4):
                x = 4 * i + 20 * k + 2
                image[y:y + 24, x:x + 14] = 30
                data["annotations"].append({"id": 4 * i + k, "image_id": i, "category_id": k + 1,
                                            "bbox": [x, y, 14, 24], "iscrowd": 0, "area": 336,
                                            "segmentation": [[x, y, x + 14, y, x + 14, y + 24, x, y + 24]]})
            cc.write_image(folder / "images" / f"{i}.png", image)
        (folder / "result.json").write_text(__import__("json").dumps(data))
        paths.update({split: str(folder / "result.json"), f"{split}_images": str(folder)})
    lexicon = tmp_path / "user" / "expected.csv"
    lexicon.write_text("batch,billet_id\nh1,0123\nh1,0124\nh2,0 1 2 5\n")
    config = make_config({"image_size_px": 64, "data": {"source": "coco", "coco": {**paths, "lexicon": str(lexicon)}},
                          "evaluation": {"id_pattern": None}})
    config["data"]["test_sets"] = [{"name": "all", "where": {"visibility": "well"}}]
    out = tmp_path / "results"
    make_real_pools(config, out / "train_pool.json", out / "test_pool.json", out / "train", out / "test",
                    out / "test_lexicon.csv", glyph_requirement(config))
    assert load_lexicon(out / "test_lexicon.csv") == {"h1": ["0123", "0124"], "h2": ["0125"]}
    pool = cc.load(out / "test_pool.json")
    assert [img["batch"] for img in pool["images"]] == ["h1", "h2"]
    # without data.coco.lexicon: a header alone (no lexicon)
    config["data"]["coco"]["lexicon"] = None
    make_real_pools(config, out / "train_pool.json", out / "test_pool.json", out / "train", out / "test",
                    out / "none.csv", glyph_requirement(config))
    assert load_lexicon(out / "none.csv") == {}
