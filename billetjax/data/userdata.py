"""Checks of a `data.source: coco` study at `snakemake -n`: what the user's files make of the config.

`billetjax.config.problems` calls `user_data_problems` when the workflow is parsed, so a config
whose consequences would fail in a later job is refused before any job, with a fix that fits a
study on the user's own data: the train export has the images the largest experiment draws, and
every test set selects billets with characters. The import job (the first job) checks the files
themselves and every record against its image (`billetjax.data.importer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=4)
def _export(path: str, size: int, mtime_ns: int) -> tuple[dict | None, str | None]:
    """(the validated COCO dict, None) or (None, the refusal), once per file version and parse."""
    from billetjax import coco as cc

    try:
        raw = cc.read_json(path)
        if isinstance(raw, dict):
            raw = {**raw, **{k: e for k, e in (("info", {}), ("licenses", [])) if raw.get(k, 0) is None}}
        cc.validate(raw, path, require_extras=False, check_bounds=False)
    except cc.CocoError as err:
        return None, str(err)
    return raw, None


def read_user_export(path: str) -> tuple[dict | None, str | None]:
    """A user's export as `_export` gives it, or (None, why) when the file is missing."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None, f"{path}: annotation file not found; fix: check the path"
    return _export(str(path), stat.st_size, stat.st_mtime_ns)


def user_data_problems(config: Mapping[str, Any]) -> list[str]:
    """Every problem of a coco study's config against the user's files (none for simulate).

    A file that is not set, missing or not COCO is left to the import job, the first job, which
    names the record; what is checked here would otherwise fail in a later job.
    """
    data = config["data"]
    if data["source"] != "coco":
        return []
    user = data["coco"]
    out = []
    for key, problems in (("train", _pool_size_problems), ("test", _test_set_problems)):
        raw = read_user_export(user[key])[0] if user[key] else None
        if raw is not None:
            out += problems(config, raw, user[key])
    return out


def normalised_category_names(names: list[str] | None, glyphs: Mapping[str, Any]) -> list[str] | None:
    """Category names as the import compares them (`billetjax.data.checks.normalise_name`: width,
    whitespace, case the glyphs do not tell apart), for the glyph check at parse time."""
    if names is None:
        return None
    from billetjax.data.checks import normalise_name
    from billetjax.data.importer import glyph_alphabet

    alphabet = glyph_alphabet(glyphs["glyph_file"])
    return sorted({normalise_name(n, alphabet) or n for n in names})


def _pool_size_problems(config: Mapping[str, Any], train: dict, path: str) -> list[str]:
    from billetjax.experiments import table1

    rows = table1(config["experiments"], config["synth"]["method"])
    need = max((e.n_real for e in rows), default=0)
    have = len(train["images"])
    if need <= have:
        return []
    widest = max(rows, key=lambda e: e.n_real)
    return [f"data.coco.train ({path}) has {have} images, but experiment {widest.number} draws {need} real "
            f"images from it (experiments.images = {config['experiments']['images']} x images_fraction x real "
            f"share); fix: lower experiments.images so that every row's real images fit in {have}, "
            "or add annotated images to the train export"]


def _test_set_problems(config: Mapping[str, Any], test: dict, path: str) -> list[str]:
    from billetjax import coco as cc
    from billetjax.data.testsets import select_test_sets

    try:
        members = select_test_sets(test, config["data"]["test_sets"], path)
    except cc.CocoError as err:
        return [str(err)]
    annotated = {a["image_id"] for a in test["annotations"]}
    out = []
    for n, (spec, ids) in enumerate(zip(config["data"]["test_sets"], members), 1):
        if not annotated & set(ids):
            out.append(f"{path}: data.test_sets[{n - 1}] ({spec['name']!r}, testset{n}) selects {len(ids)} test "
                       "image(s), none of them with an annotated character: nothing to score; fix: annotate "
                       "the test export's characters, or change the filter")
    return out
