"""The simulated plant's IDs: lengths and rows, letters at their positions, the pattern that reads them."""

import numpy as np
import pytest

from billetjax.data.billet_ids import DIGITS_ONLY, IdScheme, id_rows, random_billet_id
from billetjax.vocabulary import DIGIT_CATEGORIES, DIGITS


def test_random_billet_id_lengths_and_rows():
    rng = np.random.default_rng(0)
    ids = [random_billet_id(rng) for _ in range(600)]
    lengths = np.array([len(i) for i in ids])
    assert set(lengths) == {11, 12}
    assert 0.05 < np.mean(lengths == 12) < 0.16
    assert all(set(i) <= set(DIGITS) for i in ids)
    assert id_rows("12345678901") == ["123456", "78901"]
    assert id_rows("123456789012") == ["123456", "789012"]


def test_digits_only_ids_are_drawn_as_ever():
    """Without letters (the default study) the IDs are the very ones the digits-only simulator drew
    (values recorded from it before letters existed)."""
    before = ["52300028695", "79018923842", "12484036879", "221885103464", "85999046236", "18456280235"]
    assert [random_billet_id(np.random.default_rng(s)) for s in range(6)] == before
    assert [random_billet_id(np.random.default_rng(s), DIGITS_ONLY) for s in range(6)] == before
    assert DIGITS_ONLY.categories() == DIGIT_CATEGORIES


def test_letters_go_to_their_positions_only():
    scheme = IdScheme("QAB", (0, 6))
    assert scheme.letters == "ABQ" and scheme.alphabet == "0123456789ABQ"
    rng = np.random.default_rng(1)
    ids = [random_billet_id(rng, scheme) for _ in range(300)]
    for billet_id in ids:
        assert len(billet_id) in (11, 12)
        assert billet_id[0] in "ABQ" and billet_id[6] in "ABQ"
        assert all(c.isdigit() for i, c in enumerate(billet_id) if i not in (0, 6))
    # Every letter turns up, at about a third of the draws each.
    counts = {c: sum(i[0] == c for i in ids) for c in "ABQ"}
    assert all(60 < n < 140 for n in counts.values()), counts


def test_letter_categories_follow_the_digits():
    categories = IdScheme("ZA", (0, 6)).categories()
    assert [(c["id"], c["name"]) for c in categories] == [(d + 1, str(d)) for d in range(10)] + [(11, "A"), (12, "Z")]


def test_bad_letter_settings_are_refused():
    with pytest.raises(ValueError, match="capital letters"):
        IdScheme("a1", (0, 6))
    with pytest.raises(ValueError, match=r"id_letter_positions \[11\]"):
        IdScheme("A", (0, 11))


def test_plant_pattern_reads_the_simulated_ids():
    """The pattern the scheme proposes accepts every ID it draws; the default study's pattern
    (digits only) is refused with letters on, naming the position and a pattern that works."""
    from billetjax.evaluation.billet_id import IdPattern

    for scheme in (DIGITS_ONLY, IdScheme("AB", (0, 6)), IdScheme("C", (2, 9))):
        assert scheme.pattern_problems(scheme.id_pattern()) == []
        pattern = IdPattern.from_config(scheme.id_pattern(), list(scheme.alphabet))
        rng = np.random.default_rng(3)
        assert all(pattern.matches(random_billet_id(rng, scheme)) for _ in range(200))
    digits_only = DIGITS_ONLY.id_pattern()
    assert DIGITS_ONLY.pattern_problems(digits_only) == [] and IdScheme("AB", (0, 6)).pattern_problems(None) == []
    problems = IdScheme("AB", (0, 6)).pattern_problems(digits_only)
    assert len(problems) == 2
    assert "at position 0" in problems[0] and "at position 6" in problems[1]
    assert "'AB'" in problems[0] and "or null" in problems[0]
    stray = DIGITS_ONLY.pattern_problems({"length": 11, "alphabet": "0123456789K"})
    assert len(stray) == 1 and "['K']" in stray[0] and "data.simulate.id_letters" in stray[0]
