"""Stamp banks and the synthetic image pool (Figure 5 end to end), written as COCO (docs/data-format.md).

Generation and writing are apart: `billetjax.synth.embed` makes pixels and geometry, this module
decides what goes where (stamps, surfaces, which images are partial), runs it and writes COCO.

Stamp banks. Stamp k of the study (k = 0 .. n_total-1) has a fixed label, mask and seed, whatever
renders it; the GAN bank of the i-th checkpoint of `synth.checkpoints` renders stamps
[i n, (i+1) n), the classic bank renders all of them. So with one seed both methods embed the very
same masks on the very same surfaces and layouts: only the renderer differs. Files:
`results/synth/gan/stamps_step{ckpt}.npz` and `results/synth/classic/stamps_classic.npz`, with
`images uint8[N,S,S,3]` (RGB), `masks uint8[N,S,S]` (the paper's mask, counters open: what is
blended in), `silhouettes uint8[N,S,S]` (counters filled: what the annotation outlines), `inputs
uint8[N,S,S]` (what the renderer got), `labels <U1[N]`, `partial bool[N]`,
`whole_boxes float64[N,4]`, `whole_areas float64[N]`, `stamp_index int64[N]`, `checkpoint int64[N]`
(0 for classic) and the degraded glyph polygons as WKB (`geometry_wkb uint8[B]`,
`geometry_offsets int64[N+1]`).

Characters. The study synthesises the categories of the real train pool, whatever they are: stamp
k shows the (k mod K)-th of its K category names in ascending id order (for the simulated digits
"0".."9"), drawn from the glyph set `synth.glyphs` (the built-in digits and letters by default),
and the synthetic pool carries the real pool's categories, ids and names unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import shapely

from billetjax import coco as cc
from billetjax.glyphs import load_glyph_set, require_glyphs
from billetjax.runtime import Progress, worker_context
from billetjax.seeds import stage_seed
from billetjax.synth.embed import PARTIAL_MODES, EmbedParams, Stamp, annotation_of, compose_billet
from billetjax.synth.masks import MaskParams, make_stamp_mask
from billetjax.vocabulary import DIGIT_CATEGORIES, PARTIAL, WELL

log = logging.getLogger(__name__)

# Stamps made beyond what the pool uses, so that no stamp is used twice by chance of the plan.
BANK_SPARE = 0.1


# ----------------------------------------------------------------------------- stamp banks


@dataclass(frozen=True)
class BankPlan:
    """How many stamps the study makes and which of them are cut to partially visible ones."""

    n_total: int
    per_checkpoint: int
    partial: np.ndarray  # bool[n_total]

    def indices(self, method: str, checkpoint: int | None, checkpoints: list[int]) -> np.ndarray:
        """The stamp indices one bank renders."""
        if method == "classic":
            return np.arange(self.n_total)
        if checkpoint not in checkpoints:
            raise ValueError(f"checkpoint {checkpoint} is not in synth.checkpoints {checkpoints}")
        i = checkpoints.index(checkpoint)
        return np.arange(i * self.per_checkpoint, (i + 1) * self.per_checkpoint)


def bank_plan(config: dict) -> BankPlan:
    """The study's stamps: enough for every character of the pool plus BANK_SPARE."""
    synth = config["synth"]
    n_ckpt = len(synth["checkpoints"])
    needed = synth["images"] * synth["characters_per_image"]
    per_checkpoint = math.ceil(needed * (1 + BANK_SPARE) / n_ckpt)
    n_total = per_checkpoint * n_ckpt
    embed = EmbedParams.from_config(synth)
    weights = np.array(embed.partial_modes) / sum(embed.partial_modes)
    # Expected cut stamps: partial images x share of mode "erased" x characters per such image.
    expected = (round(synth["images"] * synth["partial_image_fraction"]) * weights[0]
                * np.mean(embed.partial_characters))
    n_partial = min(int(math.ceil(expected * 1.3)) + 2, n_total // 2) if weights[0] > 0 else 0
    rng = np.random.default_rng(stage_seed(config["seed"], "synth", "bank-plan"))
    partial = np.zeros(n_total, bool)
    partial[rng.choice(n_total, size=n_partial, replace=False)] = True
    return BankPlan(n_total=n_total, per_checkpoint=per_checkpoint, partial=partial)


def real_categories(real_json: str | os.PathLike) -> list[dict]:
    """The categories of the real train pool (a validated COCO file), in ascending id order."""
    return sorted(cc.load(real_json)["categories"], key=lambda c: int(c["id"]))


def _category_list(categories: list[dict] | None) -> list[dict]:
    """Categories in ascending id order; None stands for the simulated plant's digits."""
    chosen = DIGIT_CATEGORIES if categories is None else categories
    if not chosen:
        raise ValueError("no categories to synthesise: the real train pool defines none")
    return sorted((dict(c) for c in chosen), key=lambda c: int(c["id"]))


def _masks_chunk(args: tuple) -> list:
    config, indices, size_px, margin, names = args
    plan = bank_plan(config)
    params = MaskParams.from_config(config["synth"])
    glyphs = load_glyph_set(config["synth"]["glyphs"])
    out = []
    for k in indices:
        label = names[k % len(names)]
        out.append(make_stamp_mask(label, np.random.default_rng(stage_seed(config["seed"], "synth", "mask", int(k))),
                                   params, size_px, margin, partial=bool(plan.partial[k]),
                                   shape=glyphs.glyph(label)))
    return out


def make_masks(config: dict, indices: np.ndarray, size_px: int, margin: float, workers: int = 1,
               categories: list[dict] | None = None) -> list:
    """The heuristic masks of the given stamp indices (each from its own seed, so any split of the
    work gives the same masks).

    `categories` are the real train pool's (COCO dicts; None: the digits 0-9 with ids 1-10): stamp
    k shows the (k mod K)-th name in ascending id order, drawn from the glyph set `synth.glyphs`.
    """
    indices = np.asarray(indices)
    names = tuple(str(c["name"]) for c in _category_list(categories))
    # Refuse a category without a glyph here, by name, not deep inside a worker.
    require_glyphs(names, config["synth"]["glyphs"], where="the real train pool's categories")
    if workers <= 1 or len(indices) < 64:
        return _masks_chunk((config, indices, size_px, margin, names))
    chunks = np.array_split(indices, workers * 4)
    with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as pool:
        parts = pool.map(_masks_chunk, [(config, c, size_px, margin, names) for c in chunks])
        return [m for part in parts for m in part]


def make_bank(config: dict, method: str, out_npz: str | os.PathLike, size_px: int, margin: float,
              checkpoint: int | None = None, generator_path: str | os.PathLike | None = None,
              batch_size: int = 64, workers: int = 1, categories: list[dict] | None = None) -> dict:
    """Make the heuristic masks of one bank, render them (GAN checkpoint or classic), write the npz.

    `categories`: the real train pool's (`real_categories`), whose names the stamps cycle over;
    None: the digits 0-9. Call it before anything imports JAX when `workers` > 1: the masks are
    made in worker processes.
    """
    checkpoints = list(config["synth"]["checkpoints"])
    indices = bank_plan(config).indices(method, checkpoint, checkpoints)
    log.info("%s bank%s: %d stamps at %d px", method, f" (step {checkpoint})" if checkpoint else "", len(indices), size_px)
    stamps = make_masks(config, indices, size_px, margin, workers, categories)
    masks = np.stack([s.mask for s in stamps])
    silhouettes = np.stack([s.silhouette for s in stamps])
    if method == "gan":
        # JAX is loaded only now, after the mask workers are done.
        from billetjax.pix2pix import render_stamps
        from billetjax.runtime import enable_jax_cache

        enable_jax_cache()

        # The stamp pairs' masks are filled outlines (`billetjax.data.stamps.crop_pair` fills the
        # annotation outline): the GAN never saw a counter as a hole, so it gets silhouettes too and
        # draws counters itself.
        inputs = silhouettes
        images = render_stamps(generator_path, inputs, seed=stage_seed(config["seed"], "synth", "gan", checkpoint),
                               batch_size=batch_size)
    elif method == "classic":
        from billetjax.synth.classic import render_classic

        # The classic renderer builds a height field and needs the counters in its mask.
        inputs = masks
        images = render_classic(inputs, [stage_seed(config["seed"], "synth", "classic", int(k)) for k in indices])
    else:
        raise ValueError(f"synth.method must be gan or classic, got {method!r}")
    wkb = [shapely.to_wkb(s.geometry) for s in stamps]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in wkb])]).astype(np.int64)
    bank = {
        "images": images.astype(np.uint8),
        "masks": masks,
        "silhouettes": silhouettes,
        "inputs": inputs.astype(np.uint8),
        "labels": np.array([s.label for s in stamps]),
        "partial": np.array([s.partial for s in stamps]),
        "whole_boxes": np.array([s.whole_box for s in stamps], np.float64),
        "whole_areas": np.array([s.whole_area for s in stamps], np.float64),
        "stamp_index": indices.astype(np.int64),
        "checkpoint": np.full(len(indices), checkpoint or 0, np.int64),
        "geometry_wkb": np.frombuffer(b"".join(wkb), np.uint8),
        "geometry_offsets": offsets,
    }
    Path(out_npz).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_npz, **bank)
    log.info("%s: %d stamps (%d cut to partially visible)", out_npz, len(indices), int(bank["partial"].sum()))
    return bank


def load_banks(paths: list[str | os.PathLike]) -> dict:
    """Banks concatenated and ordered by stamp index; refuses gaps and duplicates."""
    parts = []
    for path in paths:
        with np.load(path) as data:
            part = {key: data[key] for key in data.files}
        offsets = part.pop("geometry_offsets")
        blob = part.pop("geometry_wkb").tobytes()
        part["geometries"] = np.array([blob[a:b] for a, b in zip(offsets[:-1], offsets[1:])], dtype=object)
        parts.append(part)
    bank = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.argsort(bank["stamp_index"], kind="stable")
    bank = {key: value[order] for key, value in bank.items()}
    if not np.array_equal(bank["stamp_index"], np.arange(len(order))):
        raise ValueError(f"stamp banks {[str(p) for p in paths]} do not hold stamps 0..{len(order) - 1} once each; "
                         "were they made with another synth config?")
    return bank


def _stamp(bank: dict, k: int) -> Stamp:
    return Stamp(label=str(bank["labels"][k]), image=bank["images"][k], mask=bank["masks"][k],
                 silhouette=bank["silhouettes"][k],
                 geometry=shapely.from_wkb(bank["geometries"][k]), whole_box=tuple(bank["whole_boxes"][k]),
                 whole_area=float(bank["whole_areas"][k]))


# ----------------------------------------------------------------------------- the pool


@dataclass(frozen=True)
class ImagePlan:
    """What one synthetic image gets: stamps in reading order, surfaces, partial mode."""

    index: int
    seed: int
    stamps: tuple[int, ...]
    surface: int
    texture: int
    partial_mode: str | None
    partial_targets: int


def plan_pool(config: dict, bank: dict, n_surfaces: int) -> list[ImagePlan]:
    """Which images are partial (exactly round(fraction x images)), their modes, stamps and surfaces."""
    synth = config["synth"]
    embed = EmbedParams.from_config(synth)
    rng = np.random.default_rng(stage_seed(config["seed"], "synth", "pool-plan"))
    n_images, n_chars = synth["images"], synth["characters_per_image"]
    partial_images = set(rng.permutation(n_images)[: int(round(n_images * synth["partial_image_fraction"]))].tolist())
    weights = np.array(embed.partial_modes) / sum(embed.partial_modes)
    whole = rng.permutation(np.flatnonzero(~bank["partial"]))
    cut = rng.permutation(np.flatnonzero(bank["partial"]))
    used = {"whole": 0, "cut": 0}

    def deal(kind: str) -> int:
        pool = whole if kind == "whole" else cut
        k = pool[used[kind] % len(pool)]  # wraps around only if the bank is short
        used[kind] += 1
        return int(k)

    plans = []
    for i in range(n_images):
        mode, targets = None, 0
        if i in partial_images:
            mode = PARTIAL_MODES[rng.choice(len(PARTIAL_MODES), p=weights)]
            if mode == "erased" and len(cut) == 0:
                mode = "edge"
            targets = int(rng.integers(embed.partial_characters[0], embed.partial_characters[1] + 1))
        erased = set(rng.choice(n_chars, size=min(targets, n_chars), replace=False).tolist()) if mode == "erased" else set()
        stamps = tuple(deal("cut" if j in erased else "whole") for j in range(n_chars))
        surface = int(rng.integers(n_surfaces))
        texture = int((surface + 1 + rng.integers(max(n_surfaces - 1, 1))) % n_surfaces)
        plans.append(ImagePlan(i, stage_seed(config["seed"], "synth", "image", i), stamps, surface, texture, mode, targets))
    for kind, pool in (("whole", whole), ("cut", cut)):
        if used[kind] > len(pool):
            log.warning("%d %s stamps needed, the banks hold %d: some are used twice", used[kind], kind, len(pool))
    return plans


_WORKER: dict = {}


def _init_worker(bank_paths: list[str], surfaces: list[dict], surfaces_dir: str, synth: dict, size_px: int) -> None:
    _WORKER.update(bank=load_banks(bank_paths), surfaces=surfaces, surfaces_dir=surfaces_dir,
                   params=EmbedParams.from_config(synth), size_px=size_px)


def _read_surface(file: Path, size_px: int) -> np.ndarray:
    """A blank surface at the study's image size (surfaces of another size are resized)."""
    surface = cc.read_image(file)
    if surface.shape[:2] != (size_px, size_px):
        surface = cv2.resize(surface, (size_px, size_px), interpolation=cv2.INTER_AREA)
    return surface


def _make_image(args: tuple[ImagePlan, str]) -> tuple[dict, list[dict]]:
    plan, image_file = args
    bank, params = _WORKER["bank"], _WORKER["params"]
    folder = Path(_WORKER["surfaces_dir"])
    surface = _read_surface(folder / _WORKER["surfaces"][plan.surface]["file_name"], _WORKER["size_px"])
    texture = _read_surface(folder / _WORKER["surfaces"][plan.texture]["file_name"], _WORKER["size_px"])
    billet = compose_billet(surface, texture, [_stamp(bank, k) for k in plan.stamps],
                            np.random.default_rng(plan.seed), params, plan.partial_mode, plan.partial_targets)
    cc.write_image(image_file, billet.image)
    annotations, label = [], ""
    for char, k in zip(billet.characters, plan.stamps):
        fields = annotation_of(char)
        if fields is None:
            continue
        label += char.label
        fields.update(label=char.label, stamp_checkpoint=int(bank["checkpoint"][k]))
        annotations.append(fields)
    record = {
        "width": int(billet.image.shape[1]), "height": int(billet.image.shape[0]),
        "site": _WORKER["surfaces"][plan.surface]["site"],
        "visibility": PARTIAL if plan.partial_mode else WELL,
        "billet_id": label, "source": "synthetic", "partial_mode": billet.partial_mode or "none",
    }
    return record, annotations


def make_pool(config: dict, bank_paths: list[str | os.PathLike], surfaces_dir: str | os.PathLike,
              out_json: str | os.PathLike, image_dir: str | os.PathLike, method: str, workers: int = 1,
              categories: list[dict] | None = None) -> dict:
    """Compose every synthetic image of `synth.images`, write the PNGs and the COCO file; returns it.

    `categories`: the real train pool's (`real_categories`; None: the digits 0-9), written to the
    synthetic pool unchanged; the banks' labels must be among their names. Each image has its own
    derived seed, so the bytes do not depend on the number of workers.
    """
    categories = _category_list(categories)
    surfaces_dir, image_dir = Path(surfaces_dir), Path(image_dir)
    index_file = surfaces_dir / "index.json"
    if not index_file.is_file():
        raise FileNotFoundError(f"{index_file}: no surface index (the data stage writes it with the surfaces)")
    surfaces = json.loads(index_file.read_text())
    if not surfaces:
        raise ValueError(f"{index_file}: no surfaces listed")
    bank_paths = [str(p) for p in bank_paths]
    bank = load_banks(bank_paths)
    strangers = sorted(set(bank["labels"].tolist()) - {str(c["name"]) for c in categories})
    if strangers:
        raise ValueError(f"stamp banks {bank_paths} hold characters {strangers} that are not categories of the "
                         f"real train pool ({[c['name'] for c in categories]}); were they made from another pool?")
    plans = plan_pool(config, bank, len(surfaces))
    del bank
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(plan, str(image_dir / f"synthetic_{plan.index + 1:06d}.png")) for plan in plans]
    init = (bank_paths, surfaces, str(surfaces_dir), config["synth"], int(config["image_size_px"]))
    progress = Progress(len(jobs), "synthetic images", log)
    results = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(), initializer=_init_worker,
                                 initargs=init) as pool:
            for i, result in enumerate(pool.map(_make_image, jobs, chunksize=8), 1):
                results.append(result)
                progress.update(i)
    else:
        _init_worker(*init)
        for i, job in enumerate(jobs, 1):
            results.append(_make_image(job))
            progress.update(i)
    coco = cc.empty_dataset(categories, description=f"synthetic billets, stamps rendered by {method} (Figure 5)")
    names = {c["name"]: c["id"] for c in coco["categories"]}
    ann_id = 1
    for (plan, image_file), (record, characters) in zip(jobs, results):
        record.update(id=plan.index + 1, file_name=cc.relative_file_name(out_json, image_file))
        coco["images"].append(record)
        for fields in characters:
            label = fields.pop("label")
            coco["annotations"].append({"id": ann_id, "image_id": record["id"], "category_id": names[label],
                                        "iscrowd": 0, **fields})
            ann_id += 1
    cc.validate(coco, out_json)
    cc.save(out_json, coco)
    partial = sum(img["visibility"] == PARTIAL for img in coco["images"])
    log.info("%s: %d images (%d partial), %d characters", out_json, len(coco["images"]), partial, len(coco["annotations"]))
    return coco
