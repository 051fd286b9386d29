"""Stamp pairs for pix2pix (paper §2.2.1, Figure 1) and blank billet surfaces for synthesis.

A pair is a square crop around an annotated stamp and the binary mask of its polygon in that crop,
both resized to the GAN's input size. Surfaces are blank billet faces: rendered ones for the
embedded data set (as if photographed without stamps), a user's folder, or the user's train images
with their stamps inpainted away (`cv2.inpaint` over the dilated polygons).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from billetjax import coco as cc
from billetjax.utils import Progress, stage_seed

log = logging.getLogger(__name__)

# Partial billets' stamps carry occluders and cut edges inside their crops; the GAN should learn
# what a stamp looks like, so pairs come from the well and poorly visible billets.
PAIR_VISIBILITY = ("well", "poor")


def crop_pair(image: np.ndarray, polygon: np.ndarray, size_px: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The square crop around a stamp and its polygon mask, both size_px² (Figure 1).

    The crop is centred on the stamp's box, its side the box's longer side times (1 + 2 margin);
    beyond the image border the crop reflects the image, so no black edges enter the GAN's targets.
    """
    pts = np.asarray(polygon, dtype=np.float64)
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = size_px / side
    # One affine map from image to crop coordinates (COCO's: pixel c covers [c, c + 1)), for the
    # pixels and the polygon alike; OpenCV puts pixel centres at integers, hence the half pixels.
    m = np.array([[scale, 0, size_px / 2 - cx * scale], [0, scale, size_px / 2 - cy * scale]])
    m_index = m.copy()
    m_index[:, 2] += 0.5 * (scale - 1)
    crop = cv2.warpAffine(image, m_index, (size_px, size_px),
                          flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = np.zeros((size_px, size_px), np.uint8)
    crop_pts = pts @ m[:, :2].T + m[:, 2] - 0.5
    cv2.fillPoly(mask, [np.round(crop_pts * 16).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=4)
    return crop, mask


def make_stamp_pairs(train_pool_json: str | os.PathLike, out_train: str | os.PathLike,
                     out_val: str | os.PathLike, size_px: int, n_train: int, n_val: int,
                     margin: float, seed: int) -> None:
    """Draw n_train + n_val stamps from the real train pool, crop them and write both npz files.

    Training and validation stamps come from different billets, so the validation L1 measures
    rendering of unseen stamps rather than of neighbours on the same face.
    """
    pool = cc.load(train_pool_json)
    names = cc.category_names(pool)
    grouped = cc.annotations_by_image(pool)
    rng = np.random.default_rng(seed)
    images = [img for img in pool["images"] if img["visibility"] in PAIR_VISIBILITY and grouped[img["id"]]]
    order = rng.permutation(len(images))
    # Validation billets first, until enough stamps; the rest are training billets.
    chosen: dict[str, list[tuple[dict, dict]]] = {"val": [], "train": []}
    for idx in order:
        img = images[idx]
        split = "val" if len(chosen["val"]) < n_val else "train"
        anns = grouped[img["id"]]
        chosen[split] += [(img, ann) for ann in anns]
        if len(chosen["train"]) >= n_train and split == "train":
            break
    for split, n in (("val", n_val), ("train", n_train)):
        if len(chosen[split]) < n:
            raise cc.CocoError(
                f"{train_pool_json}: only {len(chosen['val']) + len(chosen['train'])} stamps on well or poorly "
                f"visible billets, the config asks for {n_train} training + {n_val} validation stamps "
                "(data.stamps); lower them or add images"
            )
        # Within the billets taken, draw exactly n stamps.
        keep = np.sort(rng.choice(len(chosen[split]), size=n, replace=False))
        chosen[split] = [chosen[split][i] for i in keep]

    for split, out in (("train", out_train), ("val", out_val)):
        pairs = chosen[split]
        crops = np.zeros((len(pairs), size_px, size_px, 3), np.uint8)
        masks = np.zeros((len(pairs), size_px, size_px), np.uint8)
        cache: dict[int, np.ndarray] = {}
        for i, (img, ann) in enumerate(pairs):
            if img["id"] not in cache:
                cache = {img["id"]: cc.read_image(cc.image_path(train_pool_json, img))}
            crops[i], masks[i] = crop_pair(cache[img["id"]], cc.coco_to_polygon(ann["segmentation"][0]), size_px, margin)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            out,
            images=crops,
            masks=masks,
            labels=np.array([names[a["category_id"]] for _, a in pairs]),
            sites=np.array([img["site"] for img, _ in pairs]),
            visibility=np.array([img["visibility"] for img, _ in pairs]),
            image_ids=np.array([img["id"] for img, _ in pairs], np.int64),
            annotation_ids=np.array([a["id"] for _, a in pairs], np.int64),
        )
        log.info("%s: %d stamp pairs of %d px from %d billets", out, len(pairs), size_px,
                 len({img["id"] for img, _ in pairs}))


# ----------------------------------------------------------------------------- surfaces


INPAINT_DILATE_FRACTION = 0.15  # dilate each stamp polygon by this share of its box height first
INPAINT_RADIUS_PX = 5


def inpaint_stamps(image: np.ndarray, polygons: list[np.ndarray]) -> np.ndarray:
    """The image with its stamps inpainted away (Telea), over slightly dilated polygons."""
    mask = np.zeros(image.shape[:2], np.uint8)
    for pts in polygons:
        pts = np.asarray(pts, dtype=np.float64)
        height = pts[:, 1].max() - pts[:, 1].min()
        one = np.zeros_like(mask)
        cv2.fillPoly(one, [np.round(pts).astype(np.int32)], 255)
        k = max(1, int(round(height * INPAINT_DILATE_FRACTION)))
        mask |= cv2.dilate(one, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    return cv2.inpaint(image, mask, INPAINT_RADIUS_PX, cv2.INPAINT_TELEA)


def _render_surface(args: tuple) -> None:
    from billetjax.data.simulate import render_surface

    seed, site, size_px, file = args
    cc.write_image(file, render_surface(np.random.default_rng(seed), site=site, size_px=size_px))


def make_surfaces(config: dict, train_pool_json: str | os.PathLike, out_dir: str | os.PathLike,
                  workers: int = 1) -> list[dict]:
    """Write the blank surfaces and `index.json` (records `{file_name, site}`) into out_dir."""
    from billetjax.data.pools import fit_square, plan_train_pool

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size_px, seed = config["image_size_px"], config["seed"]
    index: list[dict] = []
    if config["data"]["source"] == "simulate":
        sim = config["data"]["simulate"]
        plan = plan_train_pool(sim["surfaces"], sim["site_a_fraction"], 0.0, 0.0, stage_seed(seed, "surfaces", "plan"))
        jobs = [(stage_seed(seed, "surfaces", i), site, size_px, str(out_dir / f"surface_{i:05d}.png"))
                for i, (site, _) in enumerate(plan)]
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            from billetjax.data.pools import worker_init
            from billetjax.utils import worker_context

            with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(), initializer=worker_init) as pool:
                list(pool.map(_render_surface, jobs, chunksize=4))
        else:
            for job in jobs:
                _render_surface(job)
        index = [{"file_name": Path(j[3]).name, "site": j[1]} for j in jobs]
    elif config["data"]["coco"].get("surfaces"):
        folder = Path(config["data"]["coco"]["surfaces"])
        if not folder.is_dir():
            raise cc.CocoError(f"{folder}: surfaces folder not found (data.coco.surfaces)")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
        if not files:
            raise cc.CocoError(f"{folder}: no images in the surfaces folder (data.coco.surfaces)")
        # A folder says nothing of sites: give its surfaces the train pool's site mix, seeded.
        pool = cc.load(train_pool_json)
        share_a = sum(img["site"] == "A" for img in pool["images"]) / len(pool["images"])
        sites = np.where(np.random.default_rng(stage_seed(seed, "surfaces", "sites")).random(len(files)) < share_a, "A", "B")
        for i, file in enumerate(files):
            square, *_ = fit_square(cc.read_image(file), size_px, config["data"]["coco"].get("fit", "pad"))
            name = f"surface_{i:05d}.png"
            cc.write_image(out_dir / name, square)
            index.append({"file_name": name, "site": str(sites[i]), "source": str(file)})
    else:
        pool = cc.load(train_pool_json)
        grouped = cc.annotations_by_image(pool)
        progress = Progress(len(pool["images"]), "inpainted surfaces", log)
        for i, img in enumerate(pool["images"], 1):
            polygons = [cc.coco_to_polygon(p) for a in grouped[img["id"]] for p in a.get("segmentation") or []]
            blank = inpaint_stamps(cc.read_image(cc.image_path(train_pool_json, img)), polygons)
            name = f"surface_{i:05d}.png"
            cc.write_image(out_dir / name, blank)
            index.append({"file_name": name, "site": img["site"], "source_image_id": img["id"]})
            progress.update(i)
    with open(out_dir / "index.json", "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    log.info("%s: %d blank surfaces", out_dir, len(index))
    return index
