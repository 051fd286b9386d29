"""The real image pools: rendered by the embedded simulator, or imported from a user's COCO files.

Both paths end in the same place: `train_pool.json` and `test_pool.json` (COCO, docs/data-format.md) with
their square PNG images beside them, so every later stage is blind to where the data came from.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from billetjax import coco as cc
from billetjax.data.importer import import_user_pools
from billetjax.data.lexicon import load_lexicon, write_lexicon
from billetjax.runtime import Progress, worker_context
from billetjax.seeds import stage_seed
from billetjax.vocabulary import PARTIAL, POOR, SITE_A, SITE_B, SITES, VISIBILITY, WELL

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- plans of the pools


def _split_count(total: int, fraction: float) -> tuple[int, int]:
    """(round(total * fraction), the rest)."""
    first = int(round(total * fraction))
    return first, total - first


def plan_train_pool(n_images: int, site_a_fraction: float, poor_fraction: float,
                    partial_fraction: float, seed: int) -> list[tuple[str, str]]:
    """(site, visibility) for every image of the simulated training pool, in a seeded order.

    Counts are exact (rounded) rather than drawn, so the pool has the configured proportions
    (paper: 1/3 site A, about 24 % poor or partial) at any size; the visibility mix is the same
    on both sites.
    """
    if poor_fraction + partial_fraction >= 1:
        raise ValueError(
            f"data.simulate: poor_fraction + partial_fraction = {poor_fraction + partial_fraction} "
            "leaves no well visible billets; keep the sum below 1 (paper: about 0.24)"
        )
    plan: list[tuple[str, str]] = []
    n_a, n_b = _split_count(n_images, site_a_fraction)
    for site, n in zip(SITES, (n_a, n_b)):
        n_poor = int(round(n * poor_fraction))
        n_partial = int(round(n * partial_fraction))
        plan += [(site, POOR)] * n_poor + [(site, PARTIAL)] * n_partial
        plan += [(site, WELL)] * (n - n_poor - n_partial)
    order = np.random.default_rng(seed).permutation(len(plan))
    return [plan[i] for i in order]


def plan_test_pool(well: int, poor: int, partial: int, seed: int) -> list[tuple[str, str]]:
    """(site, visibility) for the simulated test pool: exactly what Table 2's sets need,
    every class split evenly between the sites (sets 1-3 balanced by site, paper §2.3.2)."""
    plan: list[tuple[str, str]] = []
    for visibility, n in zip(VISIBILITY, (well, poor, partial)):
        n_a = n // 2 + (n % 2) * (1 if visibility == POOR else 0)
        plan += [(SITE_A, visibility)] * n_a + [(SITE_B, visibility)] * (n - n_a)
    order = np.random.default_rng(seed).permutation(len(plan))
    return [plan[i] for i in order]


# ----------------------------------------------------------------------------- simulation


def worker_init() -> None:
    """One OpenCV thread per worker process: the processes already use every core."""
    import cv2

    cv2.setNumThreads(1)


def _render_one(args: tuple) -> tuple[int, dict, list[dict]]:
    """Render one billet into `folder`; returns (index, image record, annotation stubs)."""
    from billetjax.data.billet_ids import random_billet_id
    from billetjax.data.simulate import render_billet

    index, seed, site, visibility, size_px, folder, prefix, id_scheme, billet_id, batch = args
    rng = np.random.default_rng(seed)
    # Draw the random ID that the production schedule's replaces, so that every other draw of the
    # billet (look, layout, damage) stays what it was before IDs came from a schedule.
    random_billet_id(rng, id_scheme)
    billet = render_billet(rng, site=site, visibility=visibility, size_px=size_px, billet_id=billet_id,
                           id_scheme=id_scheme)
    file = Path(folder) / f"{prefix}_{index:06d}.png"
    cc.write_image(file, billet.image)
    record = {
        "width": int(billet.image.shape[1]),
        "height": int(billet.image.shape[0]),
        "site": site,
        "visibility": visibility,
        "billet_id": billet.billet_id,
        "batch": batch,
        "source": "real",
        "file": str(file),
    }
    anns = []
    for char in billet.characters:
        polygon = np.asarray(char.polygon, dtype=np.float64)
        x, y, w, h = (float(v) for v in char.bbox)
        anns.append({
            "label": char.label,
            "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
            "segmentation": [cc.polygon_to_coco(polygon)],
            "area": round(float(_polygon_area(polygon)), 2),
        })
    return index, record, anns


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def render_pool(plan: list[tuple[str, str]], json_path: str | os.PathLike, image_dir: str | os.PathLike,
                size_px: int, seed: int, prefix: str, workers: int = 1, first_id: int = 1,
                id_scheme=None, billets=None) -> dict:
    """Render every billet of `plan` and write the COCO file; returns the COCO dict.

    `id_scheme` (`billetjax.data.billet_ids.IdScheme`; None: digits only) says which characters the
    IDs carry and so the categories (digits 1-10, letters after). `billets`: the imaged
    `ScheduledBillet`s of a production schedule, one per plan entry, whose IDs are stamped and
    whose heat becomes the image's `batch`; None: independent random IDs, no batch. Each image
    has its own derived seed, so the bytes do not depend on the number of workers.
    """
    from billetjax.data.billet_ids import DIGITS_ONLY

    id_scheme = id_scheme or DIGITS_ONLY
    if billets is not None and len(billets) != len(plan):
        raise ValueError(f"{len(billets)} scheduled billets for a plan of {len(plan)} images")
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (i, stage_seed(seed, prefix, i), site, vis, size_px, str(image_dir), prefix, id_scheme,
         billets[i].billet_id if billets is not None else None, billets[i].heat if billets is not None else None)
        for i, (site, vis) in enumerate(plan)
    ]
    results: list = [None] * len(jobs)
    progress = Progress(len(jobs), f"rendered {prefix} billets", log)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(), initializer=worker_init) as pool:
            for done, (i, record, anns) in enumerate(pool.map(_render_one, jobs, chunksize=4), 1):
                results[i] = (record, anns)
                progress.update(done)
    else:
        for done, job in enumerate(jobs, 1):
            i, record, anns = _render_one(job)
            results[i] = (record, anns)
            progress.update(done)

    dataset = cc.empty_dataset(id_scheme.categories(), description=f"billetjax simulated real billets ({prefix})")
    name_to_id = {c["name"]: c["id"] for c in dataset["categories"]}
    ann_id = 1
    for i, (record, anns) in enumerate(results):
        image_id = first_id + i
        file = record.pop("file")
        dataset["images"].append({"id": image_id, "file_name": cc.relative_file_name(json_path, file), **record})
        for a in anns:
            label = a.pop("label")
            dataset["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": name_to_id[label], "iscrowd": 0, **a,
            })
            ann_id += 1
    cc.validate(dataset, json_path)
    cc.save(json_path, dataset)
    log.info("%s: %d images, %d characters", json_path, len(dataset["images"]), len(dataset["annotations"]))
    return dataset


def simulate_real_pools(config: dict, train_json: str | os.PathLike, test_json: str | os.PathLike,
                        workers: int = 1, lexicon_csv: str | os.PathLike | None = None) -> None:
    """Render the embedded stand-in for the paper's private camera images (`billetjax.data.simulate`)
    and the test pool's lexicon (expected IDs per heat) to `lexicon_csv` (default: test_lexicon.csv
    beside `test_json`).

    The IDs of each pool come from a production schedule: consecutive images share heats, so a
    pool's `batch` (heat) attribute and the lexicon carry the plant's ID systematics."""
    from billetjax.data.billet_ids import IdScheme, production_schedule, schedule_lexicon

    sim = config["data"]["simulate"]
    sets = sim["test_pool"]
    size_px, seed = config["image_size_px"], config["seed"]
    id_scheme = IdScheme.from_config(sim)  # digits only unless data.simulate.id_letters is set
    train_plan = plan_train_pool(sim["train_pool_images"], sim["site_a_fraction"], sim["poor_fraction"],
                                 sim["partial_fraction"], stage_seed(seed, "data", "train-plan"))
    test_plan = plan_test_pool(sets[WELL], sets[POOR], sets[PARTIAL],
                               stage_seed(seed, "data", "test-plan"))
    schedules = {
        name: production_schedule(np.random.default_rng(stage_seed(seed, "data", name, "schedule")), len(plan),
                                  id_scheme)
        for name, plan in (("train", train_plan), ("test", test_plan))
    }
    imaged = {name: [b for b in schedule if b.imaged] for name, schedule in schedules.items()}
    render_pool(train_plan, train_json, Path(train_json).parent / "train", size_px,
                stage_seed(seed, "data", "train"), "train", workers, id_scheme=id_scheme, billets=imaged["train"])
    # Test ids start after the training ids, so an image id names one billet across both pools.
    render_pool(test_plan, test_json, Path(test_json).parent / "test", size_px,
                stage_seed(seed, "data", "test"), "test", workers, first_id=len(train_plan) + 1,
                id_scheme=id_scheme, billets=imaged["test"])
    write_lexicon(lexicon_csv if lexicon_csv is not None else Path(test_json).parent / "test_lexicon.csv",
                  schedule_lexicon(schedules["test"]))


# ----------------------------------------------------------------------------- both sources


def make_real_pools(config: dict, train_json: str | os.PathLike, test_json: str | os.PathLike,
                    train_images: str | os.PathLike, test_images: str | os.PathLike,
                    lexicon_csv: str | os.PathLike, glyphs: dict | None, workers: int = 1) -> None:
    """Write the real train and test pools for `data.source` (simulate or coco), their images
    into `train_images` and `test_images`, and the test pool's lexicon to `lexicon_csv` (the
    simulator's, the user's `data.coco.lexicon`, or none: a header alone); `glyphs` as
    `import_user_pools` takes it (None with `data.source: simulate`)."""
    if config["data"]["source"] == "simulate":
        simulate_real_pools(config, train_json, test_json, workers, lexicon_csv)
    else:
        import_user_pools(config, train_json, test_json, train_images, test_images, glyphs)
        user = config["data"]["coco"]["lexicon"]
        rows = []
        if user is not None:
            rows = [(batch, billet_id) for batch, ids in load_lexicon(user).items() for billet_id in ids]
        write_lexicon(lexicon_csv, rows)
