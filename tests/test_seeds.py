"""Seeds: one stage's seed from the root seed, and the seed policy of the training runs."""

import hashlib

from billetjax.seeds import run_seed, stage_seed


def sha_seed(text: str) -> int:
    """stage_seed by hand: the first 8 bytes of SHA-256 of "root/name/...", little-endian, 63 bits."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def test_stage_seed_hashes_the_names():
    assert stage_seed(2022, "gan") == sha_seed("2022/gan")
    assert stage_seed(2022, "detector", 1) == sha_seed("2022/detector/1")
    assert stage_seed(2022, "gan") != stage_seed(2023, "gan")


def test_run_seeds_of_the_gan_and_the_detector():
    # The GAN's seed has 63 bits (as gan_train.py always passed it), the detector's 31 (as
    # detector_train.py always reduced it); the detector's depends on the repeat, never on the experiment.
    assert run_seed(2022, "gan") == sha_seed("2022/gan") > 2**31
    assert run_seed(2022, "detector", 0) == sha_seed("2022/detector/0") % 2**31
    assert run_seed(5, "detector", 1) == sha_seed("5/detector/1") % 2**31 != run_seed(5, "detector", 0)
