"""The test sets (Table 2): named filters over the image attributes of the real test pool.

`data.test_sets` lists them; `testset{n}` is the n-th entry. The default is the paper's five:
all, well visible, poorly or partially visible, poorly visible, partially visible. A filter is a
mapping `attribute: value` or `attribute: [values]` (any of them); all its attributes must match.
A user may add sets of their own over any image attribute of their COCO files (e.g.
`{name: rusty, where: {rust: true}}`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from billetjax import coco as cc
from billetjax.data.lexicon import load_lexicon, write_lexicon

log = logging.getLogger(__name__)


def _matches(image: dict, where: dict[str, Any]) -> bool:
    for key, wanted in where.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        # JSON's true is not 1: compare with the type, so `rust: true` does not pick `rust: 1`.
        if not any(type(image[key]) is type(v) and image[key] == v for v in allowed):
            return False
    return True


def select_test_sets(pool: dict, test_sets: list[dict], path: str | os.PathLike) -> list[list[int]]:
    """The image ids of every test set, in pool order; refuses a filter over an attribute that
    some image lacks, and a set that selects nothing, naming the set and the fix."""
    members = []
    for n, spec in enumerate(test_sets, 1):
        where = spec["where"]
        label = f"data.test_sets[{n - 1}] ({spec['name']!r}, testset{n})"
        for key in where:
            lacking = [img for img in pool["images"] if key not in img]
            if lacking:
                files = ", ".join(str(img.get("user_file_name", img["file_name"])) for img in lacking[:3])
                raise cc.CocoError(
                    f"{path}: {label} filters on '{key}', which {len(lacking)} of {len(pool['images'])} "
                    f"test images lack (e.g. {files}); fix: add '{key}' to every image record, or drop the set"
                )
        ids = [int(img["id"]) for img in pool["images"] if _matches(img, where)]
        if not ids:
            values = sorted({repr(img[k]) for img in pool["images"] for k in where})
            raise cc.CocoError(f"{path}: {label} selects no test image (filter {where}; the pool has "
                               f"values {values}); fix: correct the filter, or add such images")
        members.append(ids)
    return members


def make_test_sets(test_pool_json: str | os.PathLike, out_paths: list[str | os.PathLike],
                   test_sets: list[dict]) -> list[dict]:
    """Write every test set as a COCO file (`out_paths[n - 1]` for testset n); returns them."""
    if len(out_paths) != len(test_sets):
        raise ValueError(f"{len(out_paths)} output paths for {len(test_sets)} test sets")
    pool = cc.load(test_pool_json)
    written = []
    for n, (spec, ids, out) in enumerate(zip(test_sets, select_test_sets(pool, test_sets, test_pool_json),
                                             out_paths), 1):
        subset = cc.subset(pool, ids, json_from=test_pool_json, json_to=out)
        subset["info"] = {**(pool.get("info") or {}), "description": f"test set {n}: {spec['name']}"}
        cc.save(out, subset)
        sites = cc.split_counts(subset, "site")
        by_site = ", ".join(f"{k} {v}" for k, v in sorted(sites.items(), key=lambda kv: str(kv[0])) if k is not None)
        log.info("test set %d (%s): %d images%s, %d characters", n, spec["name"], len(subset["images"]),
                 f" ({by_site})" if by_site else "", len(subset["annotations"]))
        written.append(subset)
    return written



def write_test_set_lexicons(lexicon_csv: str | os.PathLike, test_sets: list[dict],
                            out_paths: list[str | os.PathLike]) -> None:
    """Each test set's lexicon (`out_paths[n - 1]`): the expected IDs of the batches its images
    belong to (all of them for a lexicon without batches; a header alone for none).

    Refuses a lexicon with batches when a test image has no `batch` attribute, naming the image."""
    lexicon = load_lexicon(lexicon_csv)
    batched = bool(lexicon) and set(lexicon) != {""}
    for n, (subset, out) in enumerate(zip(test_sets, out_paths), 1):
        if batched:
            lacking = [img for img in subset["images"] if img.get("batch") is None]
            if lacking:
                name = lacking[0].get("user_file_name", lacking[0]["file_name"])
                raise cc.CocoError(
                    f"{lexicon_csv}: the lexicon names batches, but test image {name} (and {len(lacking) - 1} "
                    "more) has no 'batch' attribute; give every test image its batch or drop the lexicon's "
                    "batch column (every ID is then a candidate for every image)")
            batches = list(dict.fromkeys(str(img["batch"]) for img in subset["images"]))
        else:
            batches = list(lexicon)
        rows = [(b, billet_id) for b in batches for billet_id in lexicon.get(b, [])]
        write_lexicon(out, rows)
