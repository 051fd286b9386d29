"""Seeds derived from the config's root seed: one per stage, one per training run, one per synthesis fit."""

from __future__ import annotations

import hashlib


def stage_seed(root_seed: int, *names: object) -> int:
    """A 63-bit seed for one stage (and sub-task) derived from the config's root seed.

    Hashing the names keeps stages independent: adding a stage never shifts another's randomness.
    """
    text = "/".join([str(int(root_seed)), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


# Trainers whose run seed is reduced to 31 bits (a non-negative int32), as it always was; the GAN's
# keeps stage_seed's 63 bits. Changing either would change that trainer's weights.
INT31_SEEDED_STAGES = frozenset({"detector"})


def run_seed(root_seed: int, stage: str, repeat: int | None = None) -> int:
    """The seed of one training run of `stage` ("gan", "detector"), the one seed policy the scripts use.

    `repeat` is the run's entry of `experiments.seeds` (the GAN trains once: None). The experiment
    never enters: at one seed every experiment starts from the same weights, so experiments differ
    by their data alone.
    """
    seed = stage_seed(root_seed, stage) if repeat is None else stage_seed(root_seed, stage, int(repeat))
    return seed % 2**31 if stage in INT31_SEEDED_STAGES else seed


def fit_root_seed(root_seed: int, fit: int, per_seed: bool) -> int:
    """The root seed of synthesis fit `fit` (its GAN, stamp banks and pool). With one fit for the
    study (`synth.per_seed: false`) it is the config's root seed; with a fit per detector seed each
    fit has its own, derived from both, so that fits differ in every random choice."""
    return int(root_seed) if not per_seed else stage_seed(root_seed, "synthesis-fit", int(fit)) % 2**31
