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
from dataclasses import asdict, dataclass

import numpy as np

from billetjax import coco as cc
from billetjax.seeds import stage_seed
from billetjax.vocabulary import HARD_VISIBILITY, UNKNOWN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    """One row of Table 1 (a row of `experiments.sets`): what its training set holds and how the
    detector is to draw its batches.

    `n_real` / `n_synthetic` come from `synthetic_pct` of `images_fraction x experiments.images`,
    or from the row's `real_images` / `synthetic_images` counts. `synthetic_pct` is the configured
    share, or the counts' share.
    """

    number: int
    n_real: int
    n_synthetic: int
    synthetic_pct: float
    source: str  # the renderer whose pool the synthetic images come from: gan | classic
    strategy: str  # mix: batches drawn from all images; sequential: synthetic first, then real
    schedule: tuple[float, float] | None  # synthetic % of each batch at the first and last step
    oversample_hard: bool  # the hard (poor, partial) real training images repeated
    from_counts: bool  # the row gave real_images / synthetic_images
    other_source: bool  # the row's source is not the study's (synth.method)

    def to_dict(self) -> dict:
        """Plain values (a Snakemake param: it is compared as text to decide reruns)."""
        out = asdict(self)
        out["schedule"] = list(self.schedule) if self.schedule is not None else None
        return out

    @classmethod
    def from_dict(cls, values: Mapping) -> Experiment:
        schedule = values["schedule"]
        return cls(**{**values, "schedule": tuple(schedule) if schedule is not None else None})

    @property
    def n_images(self) -> int:
        return self.n_real + self.n_synthetic

    @property
    def real_pct(self) -> float:
        return 100.0 - self.synthetic_pct

    @property
    def uses_synthetic(self) -> bool:
        """Whether the row asks for synthetic images: the synthetic pool is then one of its inputs
        (even where rounding leaves `n_synthetic` at 0)."""
        return self.n_synthetic > 0 or (not self.from_counts and self.synthetic_pct > 0)

    @property
    def uses_real(self) -> bool:
        """Whether the row asks for real images (it is not all synthetic)."""
        return self.n_real > 0 or (not self.from_counts and self.synthetic_pct < 100)

    @property
    def is_plain(self) -> bool:
        """A row of the paper's kind: the study's synthetic source, images mixed uniformly,
        nothing oversampled, no schedule (the replacement curve is drawn through such rows)."""
        return (self.strategy == "mix" and self.schedule is None and not self.oversample_hard
                and not self.other_source)

    def batch_plan(self) -> dict | None:
        """How the detector draws this set's batches (written into the training set's `info`, read
        by `billetjax.detector.data.planned_batches`): None for a plain mix (uniform over all images),
        else `{"strategy": ..., "synthetic_schedule": [start, end] | None}`."""
        if self.strategy == "mix" and self.schedule is None:
            return None
        return {"strategy": self.strategy, "synthetic_schedule": list(self.schedule) if self.schedule else None}

    @property
    def label(self) -> str:
        """A short name for tables and figures, e.g. "50 % synthetic (classic) of 400, sequential"
        or "200 real + 400 synthetic"; the source is named where it is not the study's."""
        if self.from_counts:
            parts = [f"{n} {kind}" for n, kind in ((self.n_real, "real"), (self.n_synthetic, "synthetic")) if n]
            text = " + ".join(parts)
        else:
            text = f"{self.synthetic_pct:g} % synthetic"
        if self.uses_synthetic and self.other_source:
            text += f" ({self.source})"
        if not self.from_counts:
            text += f" of {self.n_images}"
        extras = []
        if self.strategy != "mix":
            extras.append(self.strategy)
        if self.schedule is not None:
            extras.append(f"schedule {self.schedule[0]:g}->{self.schedule[1]:g} %")
        if self.oversample_hard:
            extras.append("hard real oversampled")
        return ", ".join([text, *extras])


def table1(experiments: Mapping, synth_method: str) -> list[Experiment]:
    """Table 1 from the config's (schema-validated) `experiments` section: experiment k is row k
    of `sets`. `synth_method` (the config's `synth.method`) is the synthetic source of rows that
    name none.

    A row gives either `synthetic_pct` (of `images_fraction x images` images) or counts
    (`real_images`, `synthetic_images`, either may be left out = 0). The one place this
    arithmetic lives: the experiment sets, the config check, the workflow's inputs
    (rules/common.smk), the tables and the comparisons all read it from here.
    """
    rows = []
    for k, row in enumerate(experiments["sets"], 1):
        counts = "real_images" in row or "synthetic_images" in row
        if counts == ("synthetic_pct" in row):
            raise ValueError(f"experiments.sets row {k}: give synthetic_pct or real_images / synthetic_images, "
                             f"{'not both' if counts else 'one of them'}")
        schedule = row["synthetic_schedule"]
        source = row["synthetic_source"] or synth_method
        common = dict(source=source, other_source=source != synth_method, strategy=row["strategy"],
                      schedule=tuple(float(v) for v in schedule) if schedule is not None else None,
                      oversample_hard=bool(row["oversample_hard"]))
        if counts:
            n_real, n_synthetic = int(row.get("real_images", 0)), int(row.get("synthetic_images", 0))
            if n_real + n_synthetic == 0:
                raise ValueError(f"experiments.sets row {k}: real_images + synthetic_images is 0")
            rows.append(Experiment(k, n_real, n_synthetic, 100.0 * n_synthetic / (n_real + n_synthetic),
                                   from_counts=True, **common))
        else:
            pct = float(row["synthetic_pct"])
            n = int(round(experiments["images"] * row["images_fraction"]))
            n_synthetic = int(round(n * pct / 100))
            rows.append(Experiment(k, n - n_synthetic, n_synthetic, pct, from_counts=False, **common))
    return rows


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


def hard_repeats(visibility: list[str], hard_share: float) -> np.ndarray:
    """How often each image of an (ordered) training part appears so that its hard (poor, partial)
    images make up `hard_share` of it: easy images once, hard ones k or k + 1 times, the extra
    copies going to the first hard images of the order. int[N]; all ones where the hard share is
    already reached; ValueError when there is no hard image.
    """
    hard = np.isin(np.asarray(visibility, dtype=object), HARD_VISIBILITY)
    n_hard, n_easy = int(hard.sum()), int((~hard).sum())
    if n_hard == 0:
        raise ValueError("oversample_hard: the real training images hold no poor or partially visible "
                         "image (image attribute `visibility`) to repeat")
    # n_hard_total / (n_hard_total + n_easy) = hard_share
    total = max(n_hard, int(round(hard_share * n_easy / (1 - hard_share))))
    repeats = np.ones(len(hard), np.int64)
    whole, extra = divmod(total, n_hard)
    repeats[hard] = whole
    repeats[np.flatnonzero(hard)[:extra]] += 1
    return repeats


def make_experiment_set(experiment: Experiment, config: Mapping, seed: int, real_pool_json: str | os.PathLike,
                        synthetic_pool_json: str | os.PathLike | None, out_train: str | os.PathLike,
                        out_val: str | os.PathLike) -> None:
    """Write the training and validation COCO files of one experiment (a row of `table1`) for one seed.

    config: the root `seed` and `experiments.validation_fraction` / `hard_share` (nothing about the
    other rows, so adding a row leaves the existing sets alone). The synthetic pool is the one of
    the row's source. The training file's `info.batch_plan` tells the detector how to draw batches
    (`Experiment.batch_plan`); with `oversample_hard`, hard real training images are listed several
    times (each copy an image record of its own, `repeat_of` naming the first).
    """
    exp, number = experiment, experiment.number
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
        if kind == "real" and exp.oversample_hard:
            visibility = [str(pool["images"][int(i)].get("visibility", UNKNOWN)) for i in train_idx]
            try:
                repeats = hard_repeats(visibility, config["experiments"]["hard_share"])
            except ValueError as err:
                raise ValueError(f"{path}: experiment {number}: {err}") from None
            hard = np.isin(visibility, HARD_VISIBILITY)
            log.info("experiment %d seed %d: %d hard real training images shown as %d, beside %d others "
                     "(experiments.hard_share %.2f)", number, seed, int(hard.sum()), int(repeats[hard].sum()),
                     int((~hard).sum()), config["experiments"]["hard_share"])
            train_idx = np.repeat(train_idx, repeats)
        splits["train"].append((pool, path, train_idx))
        splits["val"].append((pool, path, val_idx))

    label = exp.label
    for split, out in (("train", out_train), ("val", out_val)):
        dataset = cc.empty_dataset(real["categories"], description=f"experiment {number} ({label}), seed {seed}, {split}")
        dataset["info"].update(experiment=number, synthetic_pct=exp.synthetic_pct, seed=seed, split=split)
        if split == "train" and exp.batch_plan() is not None:
            dataset["info"]["batch_plan"] = exp.batch_plan()
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
    first_copy: dict[int, int] = {}
    for offset, i in enumerate(indices):
        img = dict(pool["images"][int(i)])
        anns = grouped[int(img["id"])]
        img["source_image_id"] = img["id"]
        img["id"] = next_image + offset
        if int(i) in first_copy:  # an oversampled image: a copy of an earlier record
            img["repeat_of"] = first_copy[int(i)]
        else:
            first_copy[int(i)] = img["id"]
        img["file_name"] = cc.relative_file_name(out_json, cc.image_path(pool_json, pool["images"][int(i)]))
        dataset["images"].append(img)
        for ann in anns:
            dataset["annotations"].append({**ann, "id": next_ann, "image_id": img["id"],
                                           "category_id": cat_by_name[pool_names[ann["category_id"]]]})
            next_ann += 1
