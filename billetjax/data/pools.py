"""The real image pools: rendered by the embedded simulator, or imported from a user's COCO files.

Both paths end in the same place: `train_pool.json` and `test_pool.json` (COCO, DESIGN §4) with
their square PNG images beside them, so every later stage is blind to where the data came from.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from billetjax import coco as cc
from billetjax.utils import Progress, stage_seed, worker_context

log = logging.getLogger(__name__)

SITES = ("A", "B")


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
    for site, n in (("A", n_a), ("B", n_b)):
        n_poor = int(round(n * poor_fraction))
        n_partial = int(round(n * partial_fraction))
        plan += [(site, "poor")] * n_poor + [(site, "partial")] * n_partial
        plan += [(site, "well")] * (n - n_poor - n_partial)
    order = np.random.default_rng(seed).permutation(len(plan))
    return [plan[i] for i in order]


def plan_test_pool(well: int, poor: int, partial: int, seed: int) -> list[tuple[str, str]]:
    """(site, visibility) for the simulated test pool: exactly what Table 2's sets need,
    every class split evenly between the sites (sets 1-3 balanced by site, paper §2.3.2)."""
    plan: list[tuple[str, str]] = []
    for visibility, n in (("well", well), ("poor", poor), ("partial", partial)):
        n_a = n // 2 + (n % 2) * (1 if visibility == "poor" else 0)
        plan += [("A", visibility)] * n_a + [("B", visibility)] * (n - n_a)
    order = np.random.default_rng(seed).permutation(len(plan))
    return [plan[i] for i in order]


# ----------------------------------------------------------------------------- simulation


def worker_init() -> None:
    """One OpenCV thread per worker process: the processes already use every core."""
    import cv2

    cv2.setNumThreads(1)


def _render_one(args: tuple) -> tuple[int, dict, list[dict]]:
    """Render one billet into `folder`; returns (index, image record, annotation stubs)."""
    from billetjax.data.simulate import render_billet

    index, seed, site, visibility, size_px, folder, prefix = args
    billet = render_billet(np.random.default_rng(seed), site=site, visibility=visibility, size_px=size_px)
    file = Path(folder) / f"{prefix}_{index:06d}.png"
    cc.write_image(file, billet.image)
    record = {
        "width": int(billet.image.shape[1]),
        "height": int(billet.image.shape[0]),
        "site": site,
        "visibility": visibility,
        "billet_id": billet.billet_id,
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
                size_px: int, seed: int, prefix: str, workers: int = 1, first_id: int = 1) -> dict:
    """Render every billet of `plan` and write the COCO file; returns the COCO dict.

    Each image has its own derived seed, so the bytes do not depend on the number of workers.
    """
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (i, stage_seed(seed, prefix, i), site, vis, size_px, str(image_dir), prefix)
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

    dataset = cc.empty_dataset(description=f"billetjax simulated real billets ({prefix})")
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
                        workers: int = 1) -> None:
    """Render the embedded stand-in for the paper's private camera images (DESIGN §5)."""
    sim, sets = config["data"]["simulate"], config["data"]["test_sets"]
    size_px, seed = config["image_size_px"], config["seed"]
    train_plan = plan_train_pool(sim["train_pool_images"], sim["site_a_fraction"], sim["poor_fraction"],
                                 sim["partial_fraction"], stage_seed(seed, "data", "train-plan"))
    test_plan = plan_test_pool(sets["well_images"], sets["poor_images"], sets["partial_images"],
                               stage_seed(seed, "data", "test-plan"))
    render_pool(train_plan, train_json, Path(train_json).parent / "train", size_px,
                stage_seed(seed, "data", "train"), "train", workers)
    # Test ids start after the training ids, so an image id names one billet across both pools.
    render_pool(test_plan, test_json, Path(test_json).parent / "test", size_px,
                stage_seed(seed, "data", "test"), "test", workers, first_id=len(train_plan) + 1)


# ----------------------------------------------------------------------------- import of user data


def fit_square(image: np.ndarray, size_px: int, mode: str) -> tuple[np.ndarray, float, float, float]:
    """Bring an image to size_px² by resize and pad ('pad') or resize and centre crop ('crop').

    Returns the image and the transform (scale, dx, dy): x' = x * scale + dx.
    """
    import cv2

    h, w = image.shape[:2]
    if mode == "pad":
        scale = size_px / max(h, w)
    elif mode == "crop":
        scale = size_px / min(h, w)
    else:
        raise ValueError(f"data.coco.fit must be 'pad' or 'crop', got {mode!r}")
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    dx, dy = (size_px - nw) // 2, (size_px - nh) // 2
    out = np.zeros((size_px, size_px, 3), np.uint8)
    if mode == "pad":
        # Pad with the image's border colour rather than black, so padding does not look like an edge.
        out[:] = np.median(np.concatenate([resized[0], resized[-1], resized[:, 0], resized[:, -1]]), axis=0)
        out[dy:dy + nh, dx:dx + nw] = resized
    else:
        out[:] = resized[-dy:-dy + size_px, -dx:-dx + size_px]
    return out, scale, float(dx), float(dy)


MIN_VISIBLE_AFTER_CROP = 0.3  # a character cut by a crop to less than this area share is dropped (logged)


def import_coco_pool(src_json: str | os.PathLike, src_images: str | os.PathLike, dst_json: str | os.PathLike,
                     size_px: int, fit: str = "pad", first_id: int = 1) -> dict:
    """Validate a user's COCO pool and bring every image and annotation to size_px²."""
    from shapely.geometry import Polygon, box

    src_json, src_images = Path(src_json), Path(src_images)
    if not src_images.is_dir():
        raise cc.CocoError(f"{src_images}: image folder not found (data.coco.*_images)")
    # Our extras: site and visibility are needed to build Table 2's sets; source and billet_id default.
    raw = _read_user_json(src_json)
    for img in raw.get("images", []) if isinstance(raw, dict) else []:
        if isinstance(img, dict):
            img.setdefault("source", "real")
            img.setdefault("billet_id", "")
    cc.validate(raw, src_json)
    image_dir = Path(dst_json).parent / Path(dst_json).stem
    image_dir.mkdir(parents=True, exist_ok=True)
    grouped = cc.annotations_by_image(raw)
    out = {k: v for k, v in raw.items() if k not in ("images", "annotations")}
    out["images"], out["annotations"] = [], []
    frame = box(0, 0, size_px, size_px)
    ann_id = 1
    progress = Progress(len(raw["images"]), f"imported {src_json.name} images", log)
    for n, img in enumerate(raw["images"], 1):
        file = src_images / img["file_name"]
        try:
            pixels = cc.read_image(file)
        except cc.CocoError as err:
            raise cc.CocoError(f"{src_json}: image id {img['id']}: {err}") from None
        if pixels.shape[:2] != (img["height"], img["width"]):
            raise cc.CocoError(
                f"{src_json}: image id {img['id']} ({img['file_name']}): the file is "
                f"{pixels.shape[1]}x{pixels.shape[0]} but the record says {img['width']}x{img['height']}"
            )
        square, scale, dx, dy = fit_square(pixels, size_px, fit)
        image_id = first_id + n - 1
        dst_file = image_dir / f"{image_id:06d}.png"
        cc.write_image(dst_file, square)
        rec = {k: v for k, v in img.items() if k not in ("id", "file_name", "width", "height")}
        out["images"].append({"id": image_id, "file_name": cc.relative_file_name(dst_json, dst_file),
                              "width": size_px, "height": size_px, **rec})
        for ann in grouped[int(img["id"])]:
            polys = ann.get("segmentation") or []
            if polys:
                pts = cc.coco_to_polygon(polys[0]).astype(np.float64) * scale + (dx, dy)
            else:  # a box-only annotation: its outline is the box
                x, y, w, h = ann["bbox"]
                pts = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]]) * scale + (dx, dy)
            shape = Polygon(pts).buffer(0)
            visible = shape.intersection(frame)
            if shape.area <= 0 or visible.area < MIN_VISIBLE_AFTER_CROP * shape.area:
                log.warning("%s: annotation id %s of image id %s lies outside the %s-cropped frame; dropped",
                            src_json, ann["id"], img["id"], fit)
                continue
            if visible.geom_type != "Polygon":
                visible = max(getattr(visible, "geoms", [visible]), key=lambda g: g.area)
            outline = np.asarray(visible.exterior.coords)[:-1]
            out["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": ann["category_id"], "iscrowd": 0,
                "bbox": cc.bbox_of_polygon(outline), "area": round(float(visible.area), 2),
                "segmentation": [cc.polygon_to_coco(outline)],
            })
            ann_id += 1
        progress.update(n)
    cc.validate(out, dst_json)
    cc.save(dst_json, out)
    return out


def _read_user_json(path: Path) -> dict:
    import json

    if not path.is_file():
        raise cc.CocoError(f"{path}: annotation file not found (data.coco in the config)")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise cc.CocoError(f"{path}: not valid JSON ({err})") from None


def import_user_pools(config: dict, train_json: str | os.PathLike, test_json: str | os.PathLike) -> None:
    """`data.source: coco`: validate and import the user's train and test pools (DESIGN §4)."""
    user, size_px = config["data"]["coco"], config["image_size_px"]
    for key in ("train", "train_images", "test", "test_images"):
        if not user.get(key):
            raise cc.CocoError(f"config data.coco.{key} is not set; data.source: coco needs all four paths")
    train = import_coco_pool(user["train"], user["train_images"], train_json, size_px, user.get("fit", "pad"))
    if not train["images"]:
        raise cc.CocoError(f"{user['train']}: the train pool has no images")
    test = import_coco_pool(user["test"], user["test_images"], test_json, size_px, user.get("fit", "pad"),
                            first_id=len(train["images"]) + 1)
    if not test["images"]:
        raise cc.CocoError(f"{user['test']}: the test pool has no images")
    train_names = {c["name"] for c in train["categories"]}
    test_names = {c["name"] for c in test["categories"]}
    if train_names != test_names:
        raise cc.CocoError(
            f"{user['test']}: categories {sorted(test_names)} differ from the train pool's {sorted(train_names)}"
        )


def make_real_pools(config: dict, train_json: str | os.PathLike, test_json: str | os.PathLike,
                    workers: int = 1) -> None:
    """Write the real train and test pools for `data.source` (simulate or coco)."""
    if config["data"]["source"] == "simulate":
        simulate_real_pools(config, train_json, test_json, workers)
    else:
        import_user_pools(config, train_json, test_json)


def expected_counts(config: dict) -> dict[str, int]:
    """Images per test set of Table 2 for this config (set 3 = 4 + 5, set 1 = 2 + 3)."""
    sets = config["data"]["test_sets"]
    well, poor, partial = sets["well_images"], sets["poor_images"], sets["partial_images"]
    return {"1": well + poor + partial, "2": well, "3": poor + partial, "4": poor, "5": partial}

