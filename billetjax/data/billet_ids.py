"""The IDs the simulated plant stamps: their characters (`IdScheme`), one random ID, a camera's
production schedule of heats with its lexicon of expected IDs, and an ID's stamped rows.

The stamped ID is 11 characters as a rule, 12 now and then (`TWELVE_CHARACTER_FRACTION`), in two
rows (`id_rows`): a heat number and a strand/sequence number. It is digits by default; an
`IdScheme` (`data.simulate.id_letters`) puts capital letters at chosen positions. numpy only:
the config check imports it to hold `evaluation.id_pattern` and `detector.max_boxes` to these IDs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from billetjax.vocabulary import DIGITS, LETTERS, character_categories

# Share of billets stamped with 12 instead of 11 characters (paper §2.3.1: "in some cases 12").
TWELVE_CHARACTER_FRACTION = 0.10
# An ID is a heat number of HEAT_LENGTH characters (the first row), then a strand digit and a
# sequence number (the second row): ID_LENGTHS[0] characters as a rule, ID_LENGTHS[1] for
# TWELVE_CHARACTER_FRACTION of the billets. No simulated image carries more characters than
# MAX_ID_CHARACTERS (what detector.max_boxes must hold; billetjax.config checks it).
HEAT_LENGTH = 6
ID_LENGTHS = (11, 12)
MAX_ID_CHARACTERS = max(ID_LENGTHS)

# The simulated plant's ID scheme as evaluation.id_pattern describes it: heat number (plant digit
# 1-9, year digit, running number), then strand (1-8) and sequence number.
PLANT_POSITIONS = ("123456789", *[DIGITS] * (HEAT_LENGTH - 1), "12345678")


@dataclass(frozen=True)
class IdScheme:
    """The characters the simulated plant stamps: digits, and letters at some ID positions
    (`data.simulate.id_letters`, `id_letter_positions`).

    `letters` empty (`DIGITS_ONLY`, the default study) gives the digits-only IDs, drawn exactly as
    before letters existed. With letters, every position of `letter_positions` (0 = the first
    character) is a letter, each of `letters` equally likely; the other positions stay digits.
    """

    letters: str
    letter_positions: tuple[int, ...]

    def __post_init__(self) -> None:
        bad = sorted({c for c in self.letters if c not in LETTERS})
        if bad:
            raise ValueError(f"data.simulate.id_letters: {bad} are not capital letters A-Z")
        far = [p for p in self.letter_positions if not 0 <= p < ID_LENGTHS[0]]
        if far:
            raise ValueError(f"data.simulate.id_letter_positions {far}: positions run from 0 to "
                             f"{ID_LENGTHS[0] - 1} (IDs have {ID_LENGTHS[0]} or {ID_LENGTHS[1]} characters)")
        # One order whatever the config's: categories and draws do not depend on it.
        object.__setattr__(self, "letters", "".join(sorted(set(self.letters))))
        object.__setattr__(self, "letter_positions", tuple(sorted(set(int(p) for p in self.letter_positions))))

    @classmethod
    def from_config(cls, simulate: dict) -> "IdScheme":
        """From `data.simulate` of a validated config (`id_letters`, `id_letter_positions`)."""
        return cls(simulate["id_letters"], tuple(simulate["id_letter_positions"]))

    @property
    def alphabet(self) -> str:
        """Every character the IDs can carry: the digits, then the letters."""
        return DIGITS + self.letters

    def categories(self) -> list[dict]:
        """COCO categories of the simulated pools: "0"-"9" as ids 1-10, the letters from 11 on."""
        return character_categories(self.alphabet)

    def id_pattern(self) -> dict:
        """`evaluation.id_pattern` for the simulated plant: the default study's, letters where they go."""
        positions = list(PLANT_POSITIONS)
        if self.letters:
            positions += [DIGITS] * (max(self.letter_positions) + 1 - len(positions))
            for p in self.letter_positions:
                positions[p] = self.letters
        return {"rows": [HEAT_LENGTH, [n - HEAT_LENGTH for n in ID_LENGTHS]], "positions": positions}

    def pattern_problems(self, pattern: dict | None) -> list[str]:
        """Why `evaluation.id_pattern` cannot read these IDs (empty when it can, or is null).

        A letter position whose allowed characters lack some letter would make every billet with
        that letter there unreadable; a pattern character the IDs never carry is no category, which
        the evaluation refuses. Both are caught here, when the workflow is parsed.
        """
        if pattern is None:
            return []
        positions = list(pattern.get("positions") or [])
        rest = pattern.get("alphabet") or self.alphabet
        out = []
        foreign = sorted(set("".join(positions) + rest) - set(self.alphabet))
        if foreign:
            out.append(f"evaluation.id_pattern allows {foreign}, which the simulated IDs never carry (no such "
                       f"category; data.simulate.id_letters is {self.letters!r}): add them to "
                       "data.simulate.id_letters or drop them from the pattern")
        for p in self.letter_positions if self.letters else ():
            allowed = positions[p] if p < len(positions) else rest
            lacking = [c for c in self.letters if c not in allowed]
            if lacking:
                out.append(
                    f"evaluation.id_pattern allows {allowed!r} at position {p}, but data.simulate.id_letters "
                    f"stamps a letter there ({self.letters!r}; data.simulate.id_letter_positions "
                    f"{list(self.letter_positions)}), so IDs with {lacking} there could never be read; "
                    f"use e.g. evaluation.id_pattern: {self.id_pattern()}, or null")
        return out


# The digits-only IDs of the default study (no letters anywhere).
DIGITS_ONLY = IdScheme(letters="", letter_positions=())


def random_billet_id(rng: np.random.Generator, scheme: IdScheme | None = None) -> str:
    """An 11-character billet ID (heat number of 6 + sequence of 5), 12 characters ~10 % of the time.

    With `scheme.letters`, its letter positions then get a letter each (drawn after the digits, so
    digits-only IDs take the same draws as ever).
    """
    twelve = rng.random() < TWELVE_CHARACTER_FRACTION
    # Heat number: a plant digit, a year digit and a running number; then strand + sequence.
    heat = [int(rng.integers(1, 10)), int(rng.integers(0, 10))] + list(rng.integers(0, 10, HEAT_LENGTH - 2))
    length = ID_LENGTHS[1] if twelve else ID_LENGTHS[0]
    sequence = [int(rng.integers(1, 9))] + list(rng.integers(0, 10, length - HEAT_LENGTH - 1))
    billet_id = "".join(DIGITS[int(d)] for d in heat + sequence)
    if scheme is None or not scheme.letters:
        return billet_id
    chars = list(billet_id)
    for p in scheme.letter_positions:
        chars[p] = scheme.letters[int(rng.integers(len(scheme.letters)))]
    return "".join(chars)


# The simulated plant's production (docs/id-reading.md). Billets come in heats: every billet of a
# heat carries the heat number (plant digit, year digit, a running heat counter: consecutive heats
# differ in its last digits), then the strand it was cast on (1 + k mod the heat's strands for its
# k-th billet) and that strand's running sequence number (4 digits; 5 in the heats of the
# 12-character format, TWELVE_CHARACTER_FRACTION of them).
HEAT_BILLETS = (12, 24)         # billets per heat, drawn uniformly
HEAT_STRANDS = (4, 8)           # strands a heat is cast into, drawn uniformly
SKIPPED_FRACTION = 0.25         # billets passing the camera unrecorded: in the lexicon, not the pool
NEXT_HEAT_IN_LEXICON = 3        # a heat's lexicon also expects the next heat's first billets


@dataclass(frozen=True)
class ScheduledBillet:
    """One billet of the simulated production: its heat, its ID, and whether it was imaged."""

    heat: str
    billet_id: str
    imaged: bool


def production_schedule(rng: np.random.Generator, n_imaged: int,
                        scheme: IdScheme | None = None) -> list[ScheduledBillet]:
    """The production of one camera: heats of consecutive billets until `n_imaged` are imaged
    (SKIPPED_FRACTION of each heat passes unrecorded; so do the last heat's billets after the
    `n_imaged`-th), in casting order.

    With `scheme.letters`, its letter positions get a letter: per heat inside the heat number,
    per billet after it.
    """
    plant, year = int(rng.integers(1, 10)), int(rng.integers(0, 10))
    counter = int(rng.integers(0, 10 ** (HEAT_LENGTH - 2) - 1000))
    out: list[ScheduledBillet] = []
    imaged = 0
    while imaged < n_imaged:
        heat_digits = f"{plant}{year}{counter:0{HEAT_LENGTH - 2}d}"
        counter += 1
        heat_letters = {p: scheme.letters[int(rng.integers(len(scheme.letters)))]
                        for p in (scheme.letter_positions if scheme and scheme.letters else ()) if p < HEAT_LENGTH}
        heat = "".join(heat_letters.get(p, c) for p, c in enumerate(heat_digits))
        digits = ID_LENGTHS[1 if rng.random() < TWELVE_CHARACTER_FRACTION else 0] - HEAT_LENGTH - 1
        strands = int(rng.integers(HEAT_STRANDS[0], HEAT_STRANDS[1] + 1))
        starts = rng.integers(0, 10 ** digits - 100, size=strands)
        for k in range(int(rng.integers(HEAT_BILLETS[0], HEAT_BILLETS[1] + 1))):
            chars = list(f"{heat}{1 + k % strands}{starts[k % strands] + k // strands:0{digits}d}")
            for p in (scheme.letter_positions if scheme and scheme.letters else ()):
                if p >= HEAT_LENGTH:
                    chars[p] = scheme.letters[int(rng.integers(len(scheme.letters)))]
            seen = imaged < n_imaged and rng.random() >= SKIPPED_FRACTION
            imaged += seen
            out.append(ScheduledBillet(heat, "".join(chars), bool(seen)))
    return out


def schedule_lexicon(schedule: list[ScheduledBillet]) -> list[tuple[str, str]]:
    """(batch, billet_id) rows of the expected IDs: per heat, all its billets (imaged or skipped)
    and the first NEXT_HEAT_IN_LEXICON billets of the next heat (distractors)."""
    heats = list(dict.fromkeys(b.heat for b in schedule))
    by_heat = {h: [b.billet_id for b in schedule if b.heat == h] for h in heats}
    rows = []
    for k, heat in enumerate(heats):
        following = by_heat[heats[k + 1]][:NEXT_HEAT_IN_LEXICON] if k + 1 < len(heats) else []
        rows += [(heat, billet_id) for billet_id in by_heat[heat] + following]
    return rows


def id_rows(billet_id: str) -> list[str]:
    """The stamped rows of an ID: the first six characters, then the rest."""
    return [billet_id[:HEAT_LENGTH], billet_id[HEAT_LENGTH:]] if len(billet_id) > HEAT_LENGTH else [billet_id]
