"""The training sets of Table 1: real and synthetic images mixed at each experiment's ratio.

Experiment k is row k of `experiments.sets`: `synthetic_pct` of `images_fraction × experiments.images`
images are synthetic, the rest real. Per seed, each pool is put in one seeded order in which every
prefix keeps the pool's mix of sites and visibility classes; an experiment takes a prefix. So the
real part keeps the real pool's site ratio (paper: 1/3 A, 2/3 B) and the sets are nested: the real
images of experiment 6 (N/4 real) are exactly those of experiment 4 (25 % of N real), as in the paper
(§2.3.1), and a difference between experiments is the data's, not the draw's. Both parts are split
75/25 into training and validation on their own, so both splits carry the same synthetic share.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from billetjax import coco as cc
from billetjax.utils import stage_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    """One row of Table 1: its number, synthetic share and image count, and what follows from them."""

    number: int
    synthetic_pct: float
    n_images: int

    @property
    def n_synthetic(self) -> int:
        return int(round(self.n_images * self.synthetic_pct / 100))

    @property
    def n_real(self) -> int:
        return self.n_images - self.n_synthetic

    @property
    def real_pct(self) -> float:
        return 100.0 - self.synthetic_pct

    @property
    def uses_synthetic(self) -> bool:
        """Whether the row asks for synthetic images: the synthetic pool is then one of its inputs
        (even where rounding leaves `n_synthetic` at 0)."""
        return self.synthetic_pct > 0

    @property
    def uses_real(self) -> bool:
        """Whether the row asks for real images (it is not all synthetic)."""
        return self.synthetic_pct < 100


def table1(experiments: Mapping) -> list[Experiment]:
    """Table 1 from the config's (schema-validated) `experiments` section: experiment k is row k
    of `sets`, with `images_fraction x images` images of which `synthetic_pct` % are synthetic.

    The one place this arithmetic lives: the experiment sets, the config check, the workflow's
    inputs (rules/common.smk) and the tables of Table 3 all read it from here.
    """
    return [
        Experiment(k, float(row["synthetic_pct"]), int(round(experiments["images"] * row["images_fraction"])))
        for k, row in enumerate(experiments["sets"], 1)
    ]


def stratified_order(strata: list[str], seed: int) -> np.ndarray:
    """A seeded order of items in which every prefix holds each stratum in its pool proportion.

    Items of a stratum of size n get keys (rank + u) / n, rank a random order within the stratum and
    u uniform in [0, 1): sorting by key interleaves the strata evenly (systematic sampling).
    """
    rng = np.random.default_rng(seed)
    strata_arr = np.asarray(strata)
    keys = np.empty(len(strata_arr))
    for name in sorted(set(strata)):
        members = np.flatnonzero(strata_arr == name)
        ranks = rng.permutation(len(members))
        keys[members] = (ranks + rng.random(len(members))) / len(members)
    return np.argsort(keys, kind="stable")


def _split(order: np.ndarray, n: int, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The first n of an order, as (train, val); validation takes every k-th item so it is stratified too."""
    chosen = order[:n]
    n_val = int(round(n * validation_fraction))
    if n_val == 0:
        return chosen, chosen[:0]
    is_val = np.zeros(n, bool)
    is_val[np.floor(np.arange(n_val) * n / n_val).astype(int)] = True
    return chosen[~is_val], chosen[is_val]


def make_experiment_set(config: dict, number: int, seed: int, real_pool_json: str | os.PathLike,
                        synthetic_pool_json: str | os.PathLike | None, out_train: str | os.PathLike,
                        out_val: str | os.PathLike) -> None:
    """Write the training and validation COCO files of experiment `number` for one seed."""
    exps = table1(config["experiments"])
    if not 1 <= number <= len(exps):
        raise ValueError(f"experiment {number} is not in experiments.sets (1..{len(exps)})")
    exp = exps[number - 1]
    val_fraction = config["experiments"]["validation_fraction"]
    real = cc.load(real_pool_json)
    parts = [(real, real_pool_json, exp.n_real, "real")]
    if exp.n_synthetic:
        if synthetic_pool_json is None:
            raise ValueError(f"experiment {number} needs {exp.n_synthetic} synthetic images but no synthetic pool was given")
        parts.append((cc.load(synthetic_pool_json), synthetic_pool_json, exp.n_synthetic, "synthetic"))

    real_names = [c["name"] for c in sorted(real["categories"], key=lambda c: c["id"])]
    splits: dict[str, list[tuple[dict, str, np.ndarray]]] = {"train": [], "val": []}
    for pool, path, n, kind in parts:
        if n > len(pool["images"]):
            key = "data.simulate.train_pool_images" if kind == "real" else "synth.images"
            raise ValueError(
                f"{path}: experiment {number} needs {n} {kind} images but the pool has {len(pool['images'])}; "
                f"raise {key} or lower experiments.images"
            )
        names = {c["name"] for c in pool["categories"]}
        if names != set(real_names):
            raise cc.CocoError(f"{path}: categories {sorted(names)} differ from the real pool's {real_names}")
        # The order depends on the seed and the pool, not on the experiment: prefixes nest.
        order = stratified_order([f"{img.get('site', '')}/{img.get('visibility', '')}" for img in pool["images"]],
                                 stage_seed(config["seed"], "experiments", seed, kind))
        train_idx, val_idx = _split(order, n, val_fraction)
        splits["train"].append((pool, path, train_idx))
        splits["val"].append((pool, path, val_idx))

    for split, out in (("train", out_train), ("val", out_val)):
        dataset = cc.empty_dataset(real["categories"],
                                   description=f"experiment {number} ({exp.synthetic_pct:g} % synthetic), seed {seed}, {split}")
        dataset["info"].update(experiment=number, synthetic_pct=exp.synthetic_pct, seed=seed, split=split)
        for pool, path, idx in splits[split]:
            _append(dataset, pool, path, idx, out)
        cc.validate(dataset, out)
        cc.save(out, dataset)
        sources = cc.split_counts(dataset, "source")
        sites = cc.split_counts({"images": [i for i in dataset["images"] if i["source"] == "real"]}, "site")
        by_site = ", ".join(f"{k} {v}" for k, v in sorted(sites.items(), key=lambda kv: str(kv[0])) if k is not None)
        log.info("experiment %d seed %d %s: %d images (%d real%s; %d synthetic), %d characters",
                 number, seed, split, len(dataset["images"]), sources.get("real", 0),
                 f": {by_site}" if by_site else "", sources.get("synthetic", 0), len(dataset["annotations"]))


def _append(dataset: dict, pool: dict, pool_json, indices: np.ndarray, out_json) -> None:
    """Copy pool images (by index) and their annotations into dataset with fresh ids."""
    cat_by_name = {c["name"]: c["id"] for c in dataset["categories"]}
    pool_names = cc.category_names(pool)
    grouped = cc.annotations_by_image(pool)
    next_image = len(dataset["images"]) + 1
    next_ann = len(dataset["annotations"]) + 1
    for offset, i in enumerate(indices):
        img = dict(pool["images"][int(i)])
        anns = grouped[int(img["id"])]
        img["source_image_id"] = img["id"]
        img["id"] = next_image + offset
        img["file_name"] = cc.relative_file_name(out_json, cc.image_path(pool_json, pool["images"][int(i)]))
        dataset["images"].append(img)
        for ann in anns:
            dataset["annotations"].append({**ann, "id": next_ann, "image_id": img["id"],
                                           "category_id": cat_by_name[pool_names[ann["category_id"]]]})
            next_ann += 1
