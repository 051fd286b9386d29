"""Batched, jitted inference of a trained detector: a COCO file in, COCO results JSON out."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from billetjax import coco as cc
from billetjax.detector import data as det_data
from billetjax.detector.models import FasterRCNN
from billetjax.detector.postprocess import inference
from billetjax.detector.spec import DetectorSpec, load_params

log = logging.getLogger(__name__)


def load_detector(path: str | os.PathLike):
    """`(spec, graphdef, params)` of a `params.msgpack` written by `spec.save_params`."""
    spec, pure = load_params(path)
    # The model's structure only: initialising real weights (dozens of small eager computations,
    # each compiled) took 5 s of every prediction job, to be overwritten at once.
    model = nnx.eval_shape(lambda: FasterRCNN(spec.model, nnx.Rngs(0)))
    graphdef, params = nnx.split(model, nnx.Param)
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


def predict_set(predict_fn, params, data: det_data.DetectionSet, batch_size: int):
    """Run a jitted prediction over a whole set in fixed-size batches; numpy arrays per image."""
    out: dict[str, list] = {}
    for idx, n in padded_batches(len(data), batch_size):
        dets = jax.device_get(predict_fn(params, data.images[idx]))
        for k, v in dets.items():
            out.setdefault(k, []).append(np.asarray(v)[:n])
    return {k: np.concatenate(v) for k, v in out.items()}


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
    spec, graphdef, params = load_detector(params_path)
    batch_size = int(batch_size or spec.inference.batch_size)
    data = det_data.load_detection_set(test_json, max_boxes=_max_boxes(test_json),
                                       category_ids=spec.category_ids)
    if data.images.shape[1:3] != (spec.image_size_px, spec.image_size_px):
        raise ValueError(f"{test_json}: images are {data.images.shape[2]}x{data.images.shape[1]} px, "
                         f"the detector {params_path} was trained on {spec.image_size_px} px")
    predict_fn = make_predict_fn(spec, graphdef)
    t0 = time.perf_counter()
    jax.block_until_ready(predict_fn(params, data.images[:1].repeat(batch_size, 0)))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dets = predict_set(predict_fn, params, data, batch_size)
    seconds = time.perf_counter() - t0
    results = coco_results(dets, data.image_ids, spec.category_ids, class_scores=class_scores)
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(results))
    os.replace(tmp, out_json)
    log.info("%s: %d images, %d detections, %.1f images/s (batch %d, compile %.1f s) -> %s",
             test_json, len(data), len(results), len(data) / max(seconds, 1e-9), batch_size,
             compile_s, out_json)
    return results


def _max_boxes(test_json) -> int:
    """Enough padded ground-truth slots for any image of the file (inference ignores them)."""
    counts = [len(a) for a in cc.annotations_by_image(cc.load(test_json, require_extras=False)).values()]
    return max(counts + [1])
