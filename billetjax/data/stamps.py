"""Stamp pairs for pix2pix (paper §2.2.1, Figure 1) and blank billet surfaces for synthesis.

A pair is a square crop around an annotated stamp and its binary mask in that crop, both resized
to the GAN's input size. The mask is the union of the annotation's polygons; an annotation with a
box only (`segmentation: []`, as CVAT, Label Studio and Roboflow export rectangles) gets a mask
segmented from the crop inside its box (`segment_stamp`). Surfaces are blank billet faces: rendered
ones for the embedded data set (as if photographed without stamps), a user's folder, or the user's
train images with their stamps inpainted away (`cv2.inpaint` over the dilated polygons or boxes).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from billetjax import coco as cc
from billetjax.runtime import Progress
from billetjax.seeds import stage_seed
from billetjax.vocabulary import POOR, SITE_A, SITE_B, UNKNOWN, WELL

log = logging.getLogger(__name__)

# Partial billets' stamps carry occluders and cut edges inside their crops; the GAN should learn
# what a stamp looks like, so pairs come from the well and poorly visible billets (and from images
# whose visibility is not given: a user's data set may not grade its images).
PAIR_VISIBILITY = (WELL, POOR)
# Where a pair's mask came from (the npz key `mask_source`).
MASK_SOURCES = ("polygon", "box")

# Box-only masks (`segment_stamp`); lengths are shares of the box's longer side in the crop, so the
# method does not depend on the crop size. Chosen on simulated stamps against their polygon masks
# (tests/test_stamps.py keeps the mean IoU in check).
SEGMENT_SMOOTH = 0.02          # Gaussian sigma before thresholding: sensor noise, JPEG blocks
SEGMENT_BACKGROUND = 0.5       # median window estimating the surface without the stamp's walls
SEGMENT_CLOSE = 0.12           # closing radius: joins the dark and the bright wall of a stroke
SEGMENT_MIN_COMPONENT = 0.02   # pieces smaller than this share of the box are noise or a neighbour


def annotation_polygons(ann: dict) -> list[np.ndarray]:
    """The annotation's polygons as float32[K, 2] arrays; empty for a box-only annotation."""
    return [cc.coco_to_polygon(p) for p in ann.get("segmentation") or []]


def _crop_matrix(x0: float, y0: float, x1: float, y1: float, size_px: int, margin: float) -> np.ndarray:
    """The affine map from image to crop coordinates (COCO's: pixel c covers [c, c + 1)) of the
    square crop centred on the box (x0, y0)-(x1, y1), its side the box's longer side × (1 + 2 margin)."""
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = size_px / side
    return np.array([[scale, 0, size_px / 2 - cx * scale], [0, scale, size_px / 2 - cy * scale]])


def _warp_crop(image: np.ndarray, m: np.ndarray, size_px: int) -> np.ndarray:
    """The crop of `image` under the map `m`; beyond the image border it reflects the image, so no
    black edges enter the GAN's targets."""
    scale = m[0, 0]
    # OpenCV puts pixel centres at integers, hence the half pixels.
    m_index = m.copy()
    m_index[:, 2] += 0.5 * (scale - 1)
    return cv2.warpAffine(image, m_index, (size_px, size_px),
                          flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def crop_pair(image: np.ndarray, polygon: np.ndarray | list[np.ndarray], size_px: int,
              margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The square crop around a stamp and its polygon mask, both size_px² (Figure 1).

    `polygon` is one float[K, 2] outline or a list of them (one character drawn in several pieces):
    the mask is their union. The crop is centred on the stamp's box (of all pieces), its side the
    box's longer side times (1 + 2 margin).
    """
    polygons = [np.asarray(p, dtype=np.float64) for p in polygon] if _is_polygon_list(polygon) \
        else [np.asarray(polygon, dtype=np.float64)]
    pts = np.concatenate(polygons)
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    m = _crop_matrix(x0, y0, x1, y1, size_px, margin)
    crop = _warp_crop(image, m, size_px)
    mask = np.zeros((size_px, size_px), np.uint8)
    # One fillPoly per piece: a single call fills by the even-odd rule, so overlaps would be holes.
    for poly in polygons:
        _fill_outline(mask, poly @ m[:, :2].T + m[:, 2])
    return crop, mask


def _fill_outline(mask: np.ndarray, pts: np.ndarray) -> None:
    """Fill an outline given in crop coordinates into mask (255), at 1/16 px precision.

    OpenCV puts pixel centres at integers, hence the half pixel; its fillPoly also takes the pixels
    on a right or bottom edge, so a w-wide box fills w + 1 columns where the crop has them.
    """
    cv2.fillPoly(mask, [np.round((pts - 0.5) * 16).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=4)


def _is_polygon_list(polygon) -> bool:
    """True for a list of outlines, False for one outline (an array or a list of points)."""
    if isinstance(polygon, np.ndarray):
        return polygon.dtype == object
    return len(polygon) > 0 and np.ndim(polygon[0]) == 2


def crop_box(image: np.ndarray, bbox: list[float], size_px: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The square crop around a box-only stamp (COCO `bbox` [x, y, w, h]) and its segmented mask.

    The crop is framed as `crop_pair` frames a polygon whose tight box this is; the mask is
    `segment_stamp` of the crop inside the box.
    """
    x, y, w, h = (float(v) for v in bbox)
    m = _crop_matrix(x, y, x + w, y + h, size_px, margin)
    crop = _warp_crop(image, m, size_px)
    (bx0, by0), (bx1, by1) = np.array([[x, y], [x + w, y + h]]) @ m[:, :2].T + m[:, 2]
    return crop, segment_stamp(crop, (bx0, by0, bx1, by1))


def crop_stamp(image: np.ndarray, ann: dict, size_px: int, margin: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Crop and mask of one annotation and the mask's source: "polygon" (the union of the
    annotation's polygons, always preferred) or "box" (segmented inside the box)."""
    polygons = annotation_polygons(ann)
    if polygons:
        return (*crop_pair(image, polygons, size_px, margin), "polygon")
    return (*crop_box(image, ann["bbox"], size_px, margin), "box")


def box_region(box: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """bool[H, W]: the pixels of the box (x0, y0, x1, y1), in COCO coordinates, rasterised as
    `crop_pair` rasterises a polygon, so a box-only mask keeps to the extent a polygon would have."""
    x0, y0, x1, y1 = box
    out = np.zeros(shape, np.uint8)
    _fill_outline(out, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64))
    return out > 0


def _disk(radius: float) -> np.ndarray:
    r = max(int(round(radius)), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def fill_mask_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every enclosed hole filled: the silhouette that an outline polygon describes."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(mask)
    cv2.drawContours(out, contours, -1, 255, thickness=cv2.FILLED)
    return out


def ellipse_in_box(box: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """uint8[H, W] 0/255: the ellipse inscribed in the box, the fallback mask of a featureless box."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[:shape[0], :shape[1]] + 0.5
    rx, ry = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
    inside = ((xx - (x0 + x1) / 2) / rx) ** 2 + ((yy - (y0 + y1) / 2) / ry) ** 2 <= 1
    return np.where(inside, 255, 0).astype(np.uint8)


def segment_stamp(crop: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The mask (uint8 0/255) of the stamp inside `box` (x0, y0, x1, y1 in crop pixels) of an RGB crop.

    A stamp is a punched depression lit by a directional light: one wall darker, the other brighter
    than the surface, the floor about as bright as the surface. So the mask is where the grey level
    departs from the local surface level (a wide median, which the thin walls do not move) by more
    than Otsu's threshold within the box; a closing joins the two walls of a stroke, pieces too
    small to be part of the character go, and enclosed holes (counters of 0, 4, 6, 8, 9) are filled,
    as a polygon outline fills them. Nothing outside the box is ever foreground. A box without
    relief falls back to the inscribed ellipse. No randomness: the same crop gives the same mask.
    """
    inside = box_region(box, crop.shape[:2])
    if not inside.any():
        return np.zeros(crop.shape[:2], np.uint8)
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if SEGMENT_SMOOTH * side > 0.3:
        grey = cv2.GaussianBlur(grey, (0, 0), SEGMENT_SMOOTH * side)
    window = min(int(round(SEGMENT_BACKGROUND * side)) | 1, 255)
    surface = cv2.medianBlur(np.clip(grey, 0, 255).astype(np.uint8), max(window, 3)).astype(np.float32)
    relief = np.abs(grey - surface)
    top = float(relief[inside].max())
    if top < 1.0:  # a flat box: nothing to segment
        return ellipse_in_box(box, crop.shape[:2])
    level = np.clip(relief / top * 255, 0, 255).astype(np.uint8)
    threshold, _ = cv2.threshold(level[inside].reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    box_u8 = np.where(inside, 255, 0).astype(np.uint8)
    mask = np.where((level > threshold) & inside, 255, 0).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _disk(SEGMENT_CLOSE * side)) & box_u8
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= SEGMENT_MIN_COMPONENT * inside.sum()
    keep[0] = False
    mask = fill_mask_holes(np.where(keep[labels], 255, 0).astype(np.uint8))
    if not mask.any():
        return ellipse_in_box(box, crop.shape[:2])
    return mask


def make_stamp_pairs(train_pool_json: str | os.PathLike, out_train: str | os.PathLike,
                     out_val: str | os.PathLike, size_px: int, n_train: int, n_val: int,
                     margin: float, seed: int) -> None:
    """Draw n_train + n_val stamps from the real train pool, crop them and write both npz files.

    Training and validation stamps come from different billets, so the validation L1 measures
    rendering of unseen stamps rather than of neighbours on the same face. Each npz holds `images`,
    `masks`, `labels`, `sites`, `visibility`, `image_ids`, `annotation_ids` and `mask_source`
    ("polygon": the union of the annotation's polygons; "box": segmented inside its box).
    Images without `visibility` are used; without `site` or `visibility` they read
    `billetjax.vocabulary.UNKNOWN`, as in the surfaces' index.
    """
    # The pairs need boxes, polygons and images, not the billet ID or source of each record.
    pool = cc.load(train_pool_json, require_extras=False)
    names = cc.category_names(pool)
    grouped = cc.annotations_by_image(pool)
    rng = np.random.default_rng(seed)
    images = [img for img in pool["images"]
              if img.get("visibility", PAIR_VISIBILITY[0]) in PAIR_VISIBILITY and grouped[img["id"]]]
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
                f"visible billets (or of unknown visibility), the config asks for {n_train} training + {n_val} validation stamps "
                "(data.stamps); lower them or add images"
            )
        # Within the billets taken, draw exactly n stamps.
        keep = np.sort(rng.choice(len(chosen[split]), size=n, replace=False))
        chosen[split] = [chosen[split][i] for i in keep]

    for split, out in (("train", out_train), ("val", out_val)):
        pairs = chosen[split]
        crops = np.zeros((len(pairs), size_px, size_px, 3), np.uint8)
        masks = np.zeros((len(pairs), size_px, size_px), np.uint8)
        sources = []
        cache: dict[int, np.ndarray] = {}
        for i, (img, ann) in enumerate(pairs):
            if img["id"] not in cache:
                cache = {img["id"]: cc.read_image(cc.image_path(train_pool_json, img))}
            crops[i], masks[i], source = crop_stamp(cache[img["id"]], ann, size_px, margin)
            sources.append(source)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            out,
            images=crops,
            masks=masks,
            labels=np.array([names[a["category_id"]] for _, a in pairs]),
            sites=np.array([img.get("site", UNKNOWN) for img, _ in pairs]),
            visibility=np.array([img.get("visibility", UNKNOWN) for img, _ in pairs]),
            image_ids=np.array([img["id"] for img, _ in pairs], np.int64),
            annotation_ids=np.array([a["id"] for _, a in pairs], np.int64),
            mask_source=np.array(sources, dtype=f"<U{max(map(len, MASK_SOURCES))}"),
        )
        n_box = sources.count("box")
        log.info("%s: %d stamp pairs of %d px from %d billets; %d masks segmented from box-only annotations",
                 out, len(pairs), size_px, len({img["id"] for img, _ in pairs}), n_box)


# ----------------------------------------------------------------------------- surfaces


INPAINT_DILATE_FRACTION = 0.15  # dilate each stamp by this share of its height first
INPAINT_RADIUS_PX = 5


def box_outline(bbox: list[float]) -> np.ndarray:
    """The corners of a COCO box [x, y, w, h] as a float64[4, 2] outline."""
    x, y, w, h = (float(v) for v in bbox)
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])


def stamp_outlines(ann: dict) -> list[np.ndarray]:
    """What covers an annotation's stamp in its image: its polygons, or its box when it has none."""
    return annotation_polygons(ann) or [box_outline(ann["bbox"])]


def inpaint_stamps(image: np.ndarray, stamps: list) -> np.ndarray:
    """The image with its stamps inpainted away (Telea), over slightly dilated outlines.

    Each item of `stamps` is one stamp: a float[K, 2] outline, or a list of outlines (a character
    drawn in pieces, or its box corners when it has no polygon; see `stamp_outlines`). A stamp's
    pieces are filled one by one (their union) and dilated by a share of the whole stamp's height,
    so a small piece is widened as much as the character it belongs to.
    """
    mask = np.zeros(image.shape[:2], np.uint8)
    for stamp in stamps:
        pieces = [np.asarray(p, dtype=np.float64) for p in stamp] if _is_polygon_list(stamp) \
            else [np.asarray(stamp, dtype=np.float64)]
        ys = np.concatenate([p[:, 1] for p in pieces])
        height = ys.max() - ys.min()
        one = np.zeros_like(mask)
        for pts in pieces:
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
    from billetjax.data.importer import fit_square
    from billetjax.data.pools import plan_train_pool

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
            from billetjax.runtime import worker_context

            with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(), initializer=worker_init) as pool:
                list(pool.map(_render_surface, jobs, chunksize=4))
        else:
            for job in jobs:
                _render_surface(job)
        index = [{"file_name": Path(j[3]).name, "site": j[1]} for j in jobs]
    elif config["data"]["coco"]["surfaces"]:
        folder = Path(config["data"]["coco"]["surfaces"])
        if not folder.is_dir():
            raise cc.CocoError(f"{folder}: surfaces folder not found (data.coco.surfaces)")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
        if not files:
            raise cc.CocoError(f"{folder}: no images in the surfaces folder (data.coco.surfaces)")
        # A folder says nothing of sites: give its surfaces the train pool's site mix, seeded.
        pool = cc.load(train_pool_json, require_extras=False)
        if any("site" in img for img in pool["images"]):
            share_a = sum(img.get("site") == SITE_A for img in pool["images"]) / len(pool["images"])
            draws = np.random.default_rng(stage_seed(seed, "surfaces", "sites")).random(len(files))
            sites = [SITE_A if d < share_a else SITE_B for d in draws]
        else:
            sites = [UNKNOWN] * len(files)  # no site anywhere: one site for all, as for the pairs
        for i, file in enumerate(files):
            square, *_ = fit_square(cc.read_image(file), size_px, config["data"]["coco"]["fit"])
            name = f"surface_{i:05d}.png"
            cc.write_image(out_dir / name, square)
            index.append({"file_name": name, "site": sites[i], "source": str(file)})
    else:
        pool = cc.load(train_pool_json, require_extras=False)
        grouped = cc.annotations_by_image(pool)
        progress = Progress(len(pool["images"]), "inpainted surfaces", log)
        for i, img in enumerate(pool["images"], 1):
            stamps = [stamp_outlines(a) for a in grouped[img["id"]]]
            blank = inpaint_stamps(cc.read_image(cc.image_path(train_pool_json, img)), stamps)
            name = f"surface_{i:05d}.png"
            cc.write_image(out_dir / name, blank)
            index.append({"file_name": name, "site": img.get("site", UNKNOWN), "source_image_id": img["id"]})
            progress.update(i)
    with open(out_dir / "index.json", "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    log.info("%s: %d blank surfaces", out_dir, len(index))
    return index
