"""Export a trained detector as a reader (`billetjax.read.reader`): its jitted inference lowered to
StableHLO with `jax.export`, its weights, and what a machine without the workflow needs to know."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import billetjax
from billetjax import coco as cc
from billetjax.detector.predict import jit_inference, load_detector
from billetjax.read.reader import FORMAT, FORMAT_VERSION, PROGRAM, READER_JSON, WEIGHTS
from billetjax.files import atomic_write_bytes

log = logging.getLogger(__name__)

# Where the exported program runs: the inspection PC's CPU, and NVIDIA GPUs where lowering for
# them works on the exporting machine (it needs no GPU; a jax without CUDA lowering falls back).
PLATFORMS = ("cpu", "cuda")


def code_version() -> str:
    """billetjax's version, with the git commit of the checkout where there is one."""
    root = Path(billetjax.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{billetjax.__version__}+{commit}" if commit else billetjax.__version__


def reader_categories(train_json: str | os.PathLike, category_ids: tuple[int, ...]) -> list[dict]:
    """The detector's categories with the names its training file gives them (the user's ids and
    names for a coco study), in label order."""
    coco = cc.load(train_json, require_extras=False)
    names = cc.category_names(coco)
    missing = [cid for cid in category_ids if cid not in names]
    if missing:
        raise ValueError(f"{train_json}: category ids {missing} of the detector are not in this file; fix: export "
                         "the reader with the training set the detector was trained on")
    return [{"id": int(cid), "name": str(names[cid])} for cid in category_ids]


def export_reader(params_path: str | os.PathLike, train_json: str | os.PathLike, out_dir: str | os.PathLike,
                  config: dict, experiment: int | None = None, seed: int | None = None) -> dict:
    """Write the reader of a trained detector into `out_dir`; return its `reader.json` contents.

    config: a validated config (at least `image_size_px`, `data.coco` for the preprocessing and
    `evaluation` for the reading's thresholds and ID grammar).
    """
    spec, graphdef, params = load_detector(params_path)
    anchors, level_sizes = spec.anchors()
    predict_fn = jit_inference(spec, graphdef, level_sizes)
    leaves, treedef = jax.tree.flatten(params)
    anchors = jnp.asarray(anchors)
    batch, size = int(spec.inference.batch_size), int(spec.image_size_px)

    def inference(*args):
        *weights, images = args
        return predict_fn(jax.tree.unflatten(treedef, list(weights)), images, anchors)

    arg_specs = [jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in leaves]
    arg_specs.append(jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8))
    try:
        exported = jax.export.export(jax.jit(inference), platforms=PLATFORMS)(*arg_specs)
    except Exception as err:  # noqa: BLE001 -- a jax whose CUDA lowering is absent or refuses
        log.warning("lowering for %s failed (%s); exported for the CPU only", PLATFORMS, err)
        exported = jax.export.export(jax.jit(inference), platforms=("cpu",))(*arg_specs)

    coco_section, evaluation = config["data"]["coco"], config["evaluation"]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "code_version": code_version(),
        "jax_version": jax.__version__,
        "platforms": list(exported.platforms),
        "detector": {"params": str(params_path), "experiment": experiment, "seed": seed},
        "categories": reader_categories(train_json, spec.category_ids),
        "input": {"size_px": size, "batch_size": batch, "dtype": "uint8", "layout": "NHWC, RGB"},
        "outputs": {"boxes": "float32[B, D, 4] x1, y1, x2, y2 on the square", "scores": "float32[B, D]",
                    "labels": "int32[B, D], 1..K: categories[label - 1]", "valid": "bool[B, D]",
                    "class_scores": "float32[B, D, K], softmax over the categories"},
        "preprocessing": {"fit": coco_section["fit"], "max_pixels": int(coco_section["max_pixels"]),
                          "bit_depth": coco_section["bit_depth"], "orientation": "displayed (EXIF applied)",
                          "size_px": size},
        "thresholds": {"detector_score": float(spec.inference.score_threshold),
                       "detector_nms_iou": float(spec.inference.nms_iou),
                       "max_detections": int(spec.inference.max_detections)},
        "reading": {"score_threshold": float(evaluation["score_threshold"]),
                    "id_pattern": evaluation["id_pattern"],
                    "min_confidence": float(evaluation["id_reading"]["min_confidence"]),
                    "miss_probability": float(evaluation["id_reading"]["miss_probability"]),
                    "decoder_min_score": float(evaluation["id_reading"]["min_score"])},
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / PROGRAM, bytes(exported.serialize()))
    tmp = out_dir / "weights.tmp.npz"
    np.savez(tmp, **{f"w{i:05d}": np.asarray(jax.device_get(x)) for i, x in enumerate(leaves)})
    os.replace(tmp, out_dir / WEIGHTS)
    atomic_write_bytes(out_dir / READER_JSON, json.dumps(meta, indent=1).encode())
    log.info("%s: reader of %s (%d weights arrays, %s) -> %s", params_path, spec.category_ids, len(leaves),
             ", ".join(meta["platforms"]), out_dir)
    return meta
