"""The study's domain vocabulary, defined once: visibility classes, the simulator's sites, the
label of an image attribute a record does not carry, and how characters become COCO categories.

Image records carry `site` and `visibility` (docs/data-format.md); every module that names a
class, lists the classes or groups images by them takes the names from here. The test sets are
config (`data.test_sets`, `billetjax.data.testsets`), not vocabulary.
"""

from __future__ import annotations

WELL, POOR, PARTIAL = "well", "poor", "partial"
# The visibility classes of the paper (Figure 8, Table 2), in this order wherever they are listed.
VISIBILITY = (WELL, POOR, PARTIAL)
# The hard ones: what the paper balanced by synthesis (and `oversample_hard` balances by repetition).
HARD_VISIBILITY = (POOR, PARTIAL)

# The production sites the simulator renders (paper: about 1/3 from site A, 2/3 from site B). A
# user's data may name its sites freely.
SITE_A, SITE_B = "A", "B"
SITES = (SITE_A, SITE_B)

# What an image attribute (`site`, `visibility`) reads where an image record does not carry it (a
# user's data may leave both out): such images count as one site, one visibility class.
UNKNOWN = "unknown"

# The built-in characters: what the simulated plant stamps (digits, and letters when
# `data.simulate.id_letters` asks for them) and what the built-in glyphs draw.
DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The COCO super-category of every character category we write.
SUPERCATEGORY = "character"


def character_categories(alphabet: str) -> list[dict]:
    """COCO categories of the characters of `alphabet`, ids from 1 in its order (so the digits
    "0"-"9" are ids 1-10)."""
    return [{"id": i, "name": c, "supercategory": SUPERCATEGORY} for i, c in enumerate(alphabet, start=1)]


# The categories of the digits-only data: "0"-"9" as ids 1-10.
DIGIT_CATEGORIES = character_categories(DIGITS)
