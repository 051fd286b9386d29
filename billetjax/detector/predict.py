"""Batched, jitted inference of a trained detector: a COCO file in, COCO results JSON out."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from billetjax import coco as cc
from billetjax.detector import data as det_data
from billetjax.detector.models import abstract_detector, inference
from billetjax.detector.spec import DetectorSpec, load_params

log = logging.getLogger(__name__)


def load_detector(path: str | os.PathLike):
    """`(spec, graphdef, params)` of a `params.msgpack` written by `spec.save_params`."""
    spec, pure = load_params(path)
    # The model's structure only: real initial weights would be overwritten at once.
    graphdef, params = abstract_detector(spec.model)
    nnx.replace_by_pure_dict(params, jax.tree.map(jnp.asarray, pure))
    return spec, graphdef, params


def jit_inference(spec: DetectorSpec, graphdef, level_sizes: tuple[int, ...]):
    """Jitted `(params, images[B, H, W, 3], anchors) -> detections` (arrays `[B, max_detections,
    ...]`). The anchors are an argument of the compiled program, not a constant in it, so
    detectors that differ only in anchor sizes share one program (and the persistent cache)."""

    @jax.jit
    def predict_fn(params, images, anchors):
        return inference(nnx.merge(graphdef, params), spec, images, anchors, level_sizes)

    return predict_fn


def make_predict_fn(spec: DetectorSpec, graphdef):
    """`(params, images) -> detections`: `jit_inference` bound to the spec's anchors."""
    anchors, level_sizes = spec.anchors()
    anchors = jnp.asarray(anchors)
    predict_fn = jit_inference(spec, graphdef, level_sizes)
    return lambda params, images: predict_fn(params, images, anchors)


def padded_batches(n: int, batch_size: int):
    """`(indices, count)` of full batches covering 0..n-1, the last one padded by repeating its
    final index; `count` is how many of its indices are real."""
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        yield np.minimum(idx, n - 1), min(batch_size, n - start)


def predict_images(predict_fn, params, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Run a jitted prediction over `images` in fixed-size batches; numpy arrays per image."""
    out: dict[str, list] = {}
    for idx, n in padded_batches(len(images), batch_size):
        dets = jax.device_get(predict_fn(params, images[idx]))
        for k, v in dets.items():
            out.setdefault(k, []).append(np.asarray(v)[:n])
    return {k: np.concatenate(v) for k, v in out.items()}


def predict_set(predict_fn, params, data: det_data.DetectionSet, batch_size: int):
    """`predict_images` over a whole `DetectionSet`."""
    return predict_images(predict_fn, params, data.images, batch_size)


def coco_results(dets: dict[str, np.ndarray], image_ids: np.ndarray, category_ids: tuple[int, ...],
                 class_scores: bool = False) -> list[dict]:
    """Detections as a COCO results list (`image_id, category_id, bbox [x, y, w, h], score`),
    optionally with `class_scores` (softmax over the categories, ascending id, no background)."""
    results = []
    for i, image_id in enumerate(image_ids):
        for j in np.flatnonzero(dets["valid"][i]):
            x1, y1, x2, y2 = (float(v) for v in dets["boxes"][i, j])
            record = {"image_id": int(image_id), "category_id": int(category_ids[dets["labels"][i, j] - 1]),
                      "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(dets["scores"][i, j])}
            if class_scores:
                record["class_scores"] = [float(s) for s in dets["class_scores"][i, j]]
            results.append(record)
    return results


def predict(params_path: str | os.PathLike, test_json: str | os.PathLike, out_json: str | os.PathLike,
            batch_size: int | None = None, class_scores: bool = True) -> list[dict]:
    """Detect the characters of every image of `test_json`; write the COCO results list to
    `out_json` (with `class_scores` per detection unless disabled) and return it. `batch_size`
    None: the detector's `inference.batch_size`."""
    return predict_sets(params_path, [test_json], [out_json], batch_size, class_scores)[0]


def predict_sets(params_path: str | os.PathLike, test_jsons: Sequence[str | os.PathLike],
                 out_jsons: Sequence[str | os.PathLike], batch_size: int | None = None,
                 class_scores: bool = True) -> list[list[dict]]:
    """`predict` for several test sets with one loaded and compiled detector.

    Every distinct image file among the sets is run once: Table 2's test sets are filters of one
    test pool, so the five cost their union (the pool), not the sum of their sizes. Each
    `out_jsons[i]` gets the results of `test_jsons[i]` under that file's own image ids.
    """
    if len(test_jsons) != len(out_jsons):
        raise ValueError(f"{len(test_jsons)} test sets but {len(out_jsons)} output files")
    spec, graphdef, params = load_detector(params_path)
    batch_size = int(batch_size or spec.inference.batch_size)
    decoded: dict[Path, np.ndarray] = {}  # the union of the sets' images, each file decoded once

    def read_once(path: Path) -> np.ndarray:
        path = Path(path).resolve()
        if path not in decoded:
            decoded[path] = cc.read_image(path)
        return decoded[path]

    image_ids, paths = [], []  # per set
    for test_json in test_jsons:
        coco = cc.load(test_json, require_extras=False)
        data = det_data.load_detection_set(test_json, max_boxes=_max_boxes(coco),
                                           category_ids=spec.category_ids, read_image=read_once)
        if data.images.shape[1:3] != (spec.image_size_px, spec.image_size_px):
            raise ValueError(f"{test_json}: images are {data.images.shape[2]}x{data.images.shape[1]} px, "
                             f"the detector {params_path} was trained on {spec.image_size_px} px")
        image_ids.append(data.image_ids)
        paths.append([cc.image_path(test_json, r).resolve() for r in coco["images"]])
    row_of = {path: i for i, path in enumerate(decoded)}
    images = np.stack(list(decoded.values()))
    predict_fn = make_predict_fn(spec, graphdef)
    t0 = time.perf_counter()
    jax.block_until_ready(predict_fn(params, images[:1].repeat(batch_size, 0)))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dets = predict_images(predict_fn, params, images, batch_size)
    seconds = time.perf_counter() - t0
    log.info("%s: %d distinct images of %d test set(s), %.1f images/s (batch %d, compile %.1f s)",
             params_path, len(images), len(test_jsons), len(images) / max(seconds, 1e-9), batch_size,
             compile_s)
    outputs = []
    for test_json, out_json, ids, set_paths in zip(test_jsons, out_jsons, image_ids, paths):
        idx = np.array([row_of[path] for path in set_paths])
        results = coco_results({k: v[idx] for k, v in dets.items()}, ids, spec.category_ids,
                               class_scores=class_scores)
        out_json = Path(out_json)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(results))
        os.replace(tmp, out_json)
        log.info("%s: %d images, %d detections -> %s", test_json, len(ids), len(results), out_json)
        outputs.append(results)
    return outputs


def _max_boxes(coco: dict) -> int:
    """Enough padded ground-truth slots for any image of a COCO dict (inference ignores them)."""
    counts = [len(a) for a in cc.annotations_by_image(coco).values()]
    return max(counts + [1])
