"""The OCR peer's scoring (billetjax.bench.ocr_peer) on text lines written by hand, as RapidOCR
returns them; the peer itself is an optional extra and not needed here."""

import math

import pytest

from billetjax.bench.ocr_peer import peer_reading, score
from billetjax.evaluation.billet_id import IdPattern


def line(x, y, text, conf, w=60, h=20):
    return ([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], text, conf)


def test_lines_in_reading_order_and_alphabet():
    # the second row found first, a slightly lower word on the first row, a stray symbol
    lines = [line(40, 52, "71823", 0.97), line(70, 22, "513", 0.95), line(10, 20, "843", 0.99),
             line(120, 50, "-", 0.5, w=5)]
    assert peer_reading(lines, "0123456789") == ("84351371823", 0.5)
    assert peer_reading([], "0123456789") == (None, pytest.approx(math.nan, nan_ok=True))
    assert peer_reading([line(0, 0, "ABC", 0.9)], "0123456789")[0] is None


def test_peer_scores_with_and_without_the_grammar_check():
    pattern = IdPattern.from_config({"rows": [6, [5, 6]]}, [str(d) for d in range(10)])
    truth = ["84351371823", "84351371824", "84351371825", "84351371826"]
    readings = [("84351371823", 0.9), ("8435137182", 0.95), ("84351371825", 0.6), (None, math.nan)]
    out = score(truth, readings, [0.0, 30.0], pattern)
    assert out["id_read_rate"] == 50.0 and out["id_read_rate_pattern"] == 50.0
    # by confidence: 0.95 misread (10 characters), 0.9 read, 0.6 read
    assert out["id_read_peer_at_0"] == 0.0 and out["id_read_peer_at_30"] == 50.0
    # the grammar check rejects the 10-character string: nothing misread before the reads
    assert out["id_read_peer_pattern_at_0"] == 50.0
