"""The domain vocabulary: one order of the visibility classes, the simulator's sites, categories."""

from billetjax import vocabulary as v


def test_visibility_classes_in_table_2s_order():
    assert v.VISIBILITY == ("well", "poor", "partial") == (v.WELL, v.POOR, v.PARTIAL)
    assert v.SITES == ("A", "B") and v.UNKNOWN not in v.VISIBILITY + v.SITES


def test_categories_number_the_characters_from_one():
    assert v.character_categories("7A") == [{"id": 1, "name": "7", "supercategory": "character"},
                                            {"id": 2, "name": "A", "supercategory": "character"}]
    assert [(c["id"], c["name"]) for c in v.DIGIT_CATEGORIES] == [(d + 1, str(d)) for d in range(10)]
    assert v.LETTERS == "".join(chr(c) for c in range(ord("A"), ord("Z") + 1))
