"""A config section as its frozen dataclass (`billetjax.sections.typed`)."""

import dataclasses

import pytest

from billetjax.sections import typed


def test_typed_sections_convert_and_name_a_missing_key():
    """`typed` builds a stage's frozen dataclass: lists become tuples, numbers their field's
    type, nested sections their dataclasses; a missing key is named with its path."""
    @dataclasses.dataclass(frozen=True)
    class Inner:
        pair: tuple[float, float]

    @dataclasses.dataclass(frozen=True)
    class Outer:
        steps: int
        rate: float
        sizes: tuple[int, ...]
        inner: Inner
        maybe: Inner | None

    built = typed(Outer, {"steps": 3, "rate": 1, "sizes": [1, 2], "inner": {"pair": [0, 1]}, "maybe": None},
                  "x")
    assert built == Outer(3, 1.0, (1, 2), Inner((0.0, 1.0)), None)
    assert isinstance(built.rate, float) and isinstance(built.inner.pair[0], float)
    with pytest.raises(ValueError, match=r"config x\.inner lacks pair"):
        typed(Outer, {"steps": 3, "rate": 1, "sizes": [], "inner": {}, "maybe": None}, "x")
