"""Batched, jitted inference of a trained detector: a COCO file in, COCO results JSON out."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from billetjax.detector import data as det_data
from billetjax.detector.models import DetectorSpec, FasterRCNN, inference

log = logging.getLogger(__name__)


def load_params(path: str | os.PathLike):
    """`(spec, graphdef, params)` of a `params.msgpack` written by `train.save_params`."""
    from flax import serialization

    blob = serialization.msgpack_restore(Path(path).read_bytes())
    spec = DetectorSpec.from_json(blob["spec"])
    # The model's structure only: initialising real weights (dozens of small eager computations,
    # each compiled) took 5 s of every prediction job, to be overwritten at once.
    model = nnx.eval_shape(lambda: FasterRCNN(spec.model, nnx.Rngs(0)))
    graphdef, params = nnx.split(model, nnx.Param)
    nnx.replace_by_pure_dict(params, jax.tree.map(jnp.asarray, blob["params"]))
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


def predict(params_path: str | os.PathLike, test_json: str | os.PathLike, out_json: str | os.PathLike,
            batch_size: int | None = None, class_scores: bool = True) -> list[dict]:
    """Detect the characters of every image of `test_json`; write the COCO results list to
    `out_json` (with `class_scores` per detection unless disabled) and return it."""
    from billetjax.detector.train import coco_results, predict_set

    spec, graphdef, params = load_params(params_path)
    batch_size = int(batch_size or spec.inference["batch_size"])
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
    from billetjax import coco as cc

    counts = [len(a) for a in cc.annotations_by_image(cc.load(test_json, require_extras=False)).values()]
    return max(counts + [1])
