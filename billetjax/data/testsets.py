"""Test sets 1-5 of Table 2, cut from the real test pool by visibility and balanced by site.

Set 2 = well visible, set 4 = poor, set 5 = partial, set 3 = sets 4 + 5, set 1 = sets 2 + 3,
as in the paper (400 = 200 + 200, 200 = 83 + 117). Sets 1-3 take half their images from each site
where the pool allows; a shortfall on one site is filled from the other and logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from billetjax import coco as cc

log = logging.getLogger(__name__)

TEST_SET_NAMES = {1: "all", 2: "well visible", 3: "poorly or partially visible", 4: "poorly visible",
                  5: "partially visible"}


def _pick_balanced(images: list[dict], n: int, rng: np.random.Generator, what: str, path) -> list[int]:
    """n image ids, half from each site where possible (seeded)."""
    by_site = {s: [img["id"] for img in images if img["site"] == s] for s in ("A", "B")}
    for ids in by_site.values():
        rng.shuffle(ids)
    if sum(len(v) for v in by_site.values()) < n:
        have = sum(len(v) for v in by_site.values())
        raise cc.CocoError(
            f"{path}: the test pool has {have} {what} images, the config asks for {n} "
            f"(data.test_sets); lower the count or add {what} images to the test pool"
        )
    want_a = n - n // 2
    take_a = min(want_a, len(by_site["A"]))
    take_b = min(n - take_a, len(by_site["B"]))
    take_a = n - take_b  # fill a shortfall of site B from site A
    if take_a != want_a:
        log.warning("%s: %s test images are not balanced by site (A %d, B %d)", path, what, take_a, take_b)
    return sorted(by_site["A"][:take_a] + by_site["B"][:take_b])


def make_test_sets(test_pool_json: str | os.PathLike, out_paths: dict[int, str | os.PathLike],
                   well: int, poor: int, partial: int, seed: int) -> dict[int, dict]:
    """Write the five test sets as COCO files (`out_paths[k]` for set k); returns them."""
    pool = cc.load(test_pool_json)
    classes = {v: [img for img in pool["images"] if img["visibility"] == v] for v in cc.VISIBILITY}
    if not classes["poor"] and not classes["partial"]:
        raise cc.CocoError(
            f"{test_pool_json}: the test pool has no 'poor' or 'partial' image; test sets 3-5 of "
            "Table 2 need them (set each image's 'visibility')"
        )
    rng = np.random.default_rng(seed)
    well_ids = _pick_balanced(classes["well"], well, rng, "well", test_pool_json)
    # Sets 4 and 5 together make set 3, which is balanced by site; each half is balanced on its own.
    poor_ids = _pick_balanced(classes["poor"], poor, rng, "poor", test_pool_json)
    partial_ids = _pick_balanced(classes["partial"], partial, rng, "partial", test_pool_json)
    members = {
        2: well_ids,
        4: poor_ids,
        5: partial_ids,
        3: sorted(poor_ids + partial_ids),
        1: sorted(well_ids + poor_ids + partial_ids),
    }
    sets = {}
    for k in sorted(out_paths):
        subset = cc.subset(pool, members[k], json_from=test_pool_json, json_to=out_paths[k])
        subset["info"] = {**pool.get("info", {}), "description": f"test set {k}: {TEST_SET_NAMES[k]}"}
        cc.save(out_paths[k], subset)
        sites = cc.split_counts(subset, "site")
        log.info("test set %d (%s): %d images (A %d, B %d), %d characters", k, TEST_SET_NAMES[k],
                 len(subset["images"]), sites.get("A", 0), sites.get("B", 0), len(subset["annotations"]))
        sets[k] = subset
    return sets


def test_set_paths(folder: str | os.PathLike) -> dict[int, Path]:
    """The five test-set files in a folder."""
    return {k: Path(folder) / f"testset{k}.json" for k in range(1, 6)}
