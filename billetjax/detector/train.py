"""Training of the Faster R-CNN: state, one jitted step, the loop with evaluation and checkpoints.

The model is split once (`nnx.split`) into a graph definition and its parameters; the step is a
pure function of `(state, batch, key)` under `jax.jit` with the state donated, so one training
compiles one step (and one evaluation) per shape. Randomness of step s is `fold_in(key, s)`.
A killed training resumes from the latest orbax checkpoint in its `state/` folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from billetjax import runs
from billetjax.detector import anchors as anchors_lib
from billetjax.detector import data as det_data
from billetjax.detector import targets
from billetjax.detector.models import DetectorSpec, FasterRCNN, ModelConfig, pool_rois, rpn_proposals
from billetjax.detector.predict import jit_inference

log = logging.getLogger(__name__)
# orbax logs every save at INFO through absl; keep the training log readable.
logging.getLogger("absl").setLevel(logging.WARNING)

HISTORY_COLUMNS = ["step", "loss", "rpn_cls", "rpn_box", "roi_cls", "roi_box", "lr", "val_loss",
                   "val_map50", "steps_per_s"]

# torchvision's defaults for the two stages (RegionProposalNetwork, RoIHeads); config overrides.
DEFAULT_RPN = {"pre_nms_top_n_train": 1000, "post_nms_top_n_train": 256, "pre_nms_top_n_test": 500,
               "post_nms_top_n_test": 150, "nms_iou": 0.7, "fg_iou": 0.7, "bg_iou": 0.3,
               "batch_size_per_image": 256, "positive_fraction": 0.5}
DEFAULT_ROI = {"batch_size_per_image": 128, "positive_fraction": 0.25, "fg_iou": 0.5, "bg_iou": 0.5,
               "sampling_ratio": 1}
DEFAULT_INFERENCE = {"score_threshold": 0.05, "nms_iou": 0.5, "max_detections": 32, "batch_size": 8}

# `detector` keys that may change between a run and its resumption: they decide when to validate
# and to checkpoint and how to predict during validation, never the weights or the batches.
# `steps` is NOT among them: the learning rate follows a cosine over `steps` (make_optimizer), so
# a state at step s of a 900-step run is not on the trajectory of a 1200-step run; a change of
# `steps` restarts the training.
RESUMABLE_KEYS = frozenset({"eval_every", "checkpoint_every", "inference"})
# The modules whose code defines the trajectory (their source is part of the fingerprint).
TRAJECTORY_MODULES = ("billetjax.detector.train", "billetjax.detector.models", "billetjax.detector.data",
                      "billetjax.detector.targets", "billetjax.detector.anchors")


def make_spec(detector_cfg: dict, image_size_px: int, category_ids: tuple[int, ...],
              train_boxes_xywh: np.ndarray) -> tuple[DetectorSpec, str]:
    """The detector's spec from config.yaml's `detector` section, with anchors sized from the
    training boxes (`anchors.anchor_sizes_from_boxes`); returns it with the anchor summary."""
    model_cfg = detector_cfg.get("model", {})
    anchor_cfg = detector_cfg.get("anchors", {})
    n_levels = len(model_cfg.get("widths", ModelConfig.widths))
    n_anchor_levels = min(int(model_cfg.get("anchor_levels", n_levels)), n_levels)
    n_sizes = int(anchor_cfg.get("sizes_per_level", 3))
    n_ratios = int(anchor_cfg.get("aspect_ratios", 3))
    strides = tuple(4 * 2**i for i in range(n_anchor_levels))
    sizes, ratios, summary = anchors_lib.anchor_sizes_from_boxes(
        train_boxes_xywh, n_anchor_levels, n_sizes, n_ratios,
        size_quantiles=tuple(anchor_cfg.get("size_quantiles", (0.02, 0.98))), strides=strides)
    model = ModelConfig.from_dict({**model_cfg, "anchor_levels": n_anchor_levels},
                                  num_classes=len(category_ids), anchors_per_location=n_sizes * n_ratios)
    if image_size_px % model.strides[-1]:
        raise ValueError(f"image_size_px = {image_size_px} must be a multiple of the coarsest "
                         f"stride {model.strides[-1]} (detector.model.widths has {n_levels} levels)")
    spec = DetectorSpec(
        model=model, image_size_px=int(image_size_px), category_ids=tuple(category_ids),
        anchor_sizes=sizes, aspect_ratios=ratios,
        rpn={**DEFAULT_RPN, **detector_cfg.get("rpn", {})},
        roi={**DEFAULT_ROI, **detector_cfg.get("roi", {})},
        inference={**DEFAULT_INFERENCE, **detector_cfg.get("inference", {})},
    )
    return spec, summary


def smooth_l1(x: jax.Array, beta: float = 1.0 / 9) -> jax.Array:
    """torchvision's smooth-L1 (Huber / beta) per element."""
    ax = jnp.abs(x)
    return jnp.where(ax < beta, 0.5 * ax**2 / beta, ax - 0.5 * beta)


def detection_losses(model: FasterRCNN, spec: DetectorSpec, anchors: jax.Array,
                     level_sizes: tuple[int, ...], batch, key) -> dict[str, jax.Array]:
    """The four Faster R-CNN losses of a batch (torchvision's definitions and normalisations)."""
    images, gt_boxes, gt_labels, gt_valid = batch
    b = images.shape[0]
    hw = (spec.image_size_px, spec.image_size_px)
    rpn_key, roi_key = jax.random.split(key)
    levels, logits, deltas = model(images)

    rpn = spec.rpn
    t = jax.vmap(lambda g, v, k: targets.rpn_targets(
        anchors, g, v, k, rpn["fg_iou"], rpn["bg_iou"], rpn["batch_size_per_image"],
        rpn["positive_fraction"]))(gt_boxes, gt_valid, jax.random.split(rpn_key, b))
    sampled = t.positive | t.negative
    n_sampled = jnp.maximum(sampled.sum(), 1)
    bce = optax.sigmoid_binary_cross_entropy(logits, t.objectness)
    rpn_cls = jnp.sum(jnp.where(sampled, bce, 0.0)) / n_sampled
    rpn_box = jnp.sum(jnp.where(t.positive[..., None], smooth_l1(deltas - t.deltas), 0.0)) / n_sampled

    proposals, proposal_valid = rpn_proposals(
        logits, deltas, anchors, level_sizes, hw, rpn["pre_nms_top_n_train"],
        rpn["post_nms_top_n_train"], rpn["nms_iou"])
    roi = spec.roi
    rt = jax.vmap(lambda p, pv, g, gl, gv, k: targets.roi_targets(
        p, pv, g, gl, gv, k, roi["batch_size_per_image"], roi["positive_fraction"],
        roi["fg_iou"], roi["bg_iou"]))(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid,
                                       jax.random.split(roi_key, b))
    pooled = pool_rois(levels, rt.rois, spec.model.pool_size, roi["sampling_ratio"])
    cls_logits, box_deltas = model.box_head(pooled)
    labels = rt.labels.reshape(-1)
    valid = rt.valid.reshape(-1)
    positive = rt.positive.reshape(-1)
    n_rois = jnp.maximum(valid.sum(), 1)
    ce = optax.softmax_cross_entropy_with_integer_labels(cls_logits, labels)
    roi_cls = jnp.sum(jnp.where(valid, ce, 0.0)) / n_rois
    class_deltas = jnp.take_along_axis(box_deltas, labels[:, None, None], axis=1)[:, 0]
    roi_box = jnp.sum(jnp.where(positive[:, None],
                                smooth_l1(class_deltas - rt.deltas.reshape(-1, 4)), 0.0)) / n_rois
    return {"rpn_cls": rpn_cls, "rpn_box": rpn_box, "roi_cls": roi_cls, "roi_box": roi_box}


def make_optimizer(cfg: dict, steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """SGD with momentum, linear warm-up, cosine decay, decoupled weight decay, gradient clipping."""
    peak = float(cfg.get("learning_rate", 0.04))
    warmup = min(int(cfg.get("warmup_steps", 50)), max(steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=peak * 0.001, peak_value=peak, warmup_steps=warmup, decay_steps=max(steps, warmup + 1),
        end_value=peak * float(cfg.get("final_lr_fraction", 0.01)))
    opt = optax.chain(
        optax.clip_by_global_norm(float(cfg.get("clip_norm", 10.0))),
        optax.add_decayed_weights(float(cfg.get("weight_decay", 1e-4))),
        optax.sgd(schedule, momentum=float(cfg.get("momentum", 0.9)), nesterov=False),
    )
    return opt, schedule


class Functions:
    """The jitted functions of one detector shape: train step, validation loss, inference.

    Built once per training; `nnx.split` happens here and the functions take plain state pytrees.
    The anchors are an argument of the compiled programs, not a constant inside them, so every
    experiment of a study (each with anchors sized from its own boxes) compiles the same
    programs, and all but the first come from the persistent compilation cache.
    `train_step`, `eval_loss` and `predict` bind this detector's anchors; the `*_fn` attributes
    are the jitted functions themselves.
    """

    def __init__(self, spec: DetectorSpec, optimizer: optax.GradientTransformation,
                 schedule: optax.Schedule, seed: int):
        self.spec = spec
        model = FasterRCNN(spec.model, nnx.Rngs(seed))
        self.graphdef, params = nnx.split(model, nnx.Param)
        anchors, self.level_sizes = spec.anchors()
        self.anchors = jnp.asarray(anchors)
        self.optimizer = optimizer
        self.schedule = schedule
        self.initial_state = {"params": params, "opt_state": optimizer.init(params),
                              "step": jnp.zeros((), jnp.int32)}
        self.train_step_fn = jax.jit(self._train_step, donate_argnums=0)
        self.eval_loss_fn = jax.jit(self._eval_loss)
        self.predict_fn = jit_inference(spec, self.graphdef, self.level_sizes)

    def train_step(self, state, batch, key):
        return self.train_step_fn(state, batch, key, self.anchors)

    def eval_loss(self, params, batch, key):
        return self.eval_loss_fn(params, batch, key, self.anchors)

    def predict(self, params, images):
        return self.predict_fn(params, images, self.anchors)

    def _losses(self, params, batch, key, anchors):
        model = nnx.merge(self.graphdef, params)
        return detection_losses(model, self.spec, anchors, self.level_sizes, batch, key)

    def _train_step(self, state, batch, key, anchors):
        step_key = jax.random.fold_in(key, state["step"])

        def loss_fn(params):
            parts = self._losses(params, batch, step_key, anchors)
            return sum(parts.values()), parts

        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"loss": loss, **parts, "lr": self.schedule(state["step"]),
                   "grad_norm": optax.tree.norm(grads)}
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    def _eval_loss(self, params, batch, key, anchors):
        parts = self._losses(params, batch, key, anchors)
        return sum(parts.values())



def _padded_batches(n: int, batch_size: int):
    """Index arrays of full batches covering 0..n-1 (the last one padded by repetition)."""
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        yield np.minimum(idx, n - 1), min(batch_size, n - start)


def predict_set(predict_fn, params, data: det_data.DetectionSet, batch_size: int):
    """Run a jitted prediction over a whole set in fixed-size batches; numpy arrays per image."""
    out: dict[str, list] = {}
    for idx, n in _padded_batches(len(data), batch_size):
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


def evaluate(fns: Functions, params, val: det_data.DetectionSet, val_coco: dict, key) -> tuple[float, float]:
    """Validation loss (same sampling as training, fixed key, no augmentation) and mAP@0.5."""
    from billetjax.evaluation import map50

    batch_size = fns.spec.inference["batch_size"]
    losses, weights = [], []
    for idx, n in _padded_batches(len(val), batch_size):
        batch = (val.images[idx], val.boxes[idx], val.labels[idx], val.valid[idx])
        losses.append(float(fns.eval_loss(params, batch, key)))
        weights.append(n)
    dets = predict_set(fns.predict, params, val, batch_size)
    m = map50(val_coco, coco_results(dets, val.image_ids, val.category_ids))
    return float(np.average(losses, weights=weights)), float(m)


def save_params(path: str | os.PathLike, spec: DetectorSpec, params) -> None:
    """Final weights and the spec (JSON) in one msgpack file; `predict.load_params` reads it."""
    from flax import serialization

    pure = nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params
    blob = serialization.msgpack_serialize({"spec": spec.to_json(), "params": jax.device_get(pure)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def train(train_json: str | os.PathLike, val_json: str | os.PathLike, params_out: str | os.PathLike,
          history_out: str | os.PathLike, state_dir: str | os.PathLike, detector_cfg: dict,
          image_size_px: int, seed: int, checkpoint_every: int | None = None,
          keep_state: bool = False) -> dict[str, Any]:
    """Train one detector and write `params_out` and `history_out` (HISTORY_COLUMNS).

    `state_dir` is a `runs.RunFolder`: the latest checkpoint there is resumed when its fingerprint
    (config without RESUMABLE_KEYS, seed, implementation, data files) is this run's, else
    training starts afresh; the running history lives there too, so a killed job loses at most
    `checkpoint_every` steps. The state is deleted after success unless `keep_state`. Returns a
    summary dict.
    """
    from billetjax import coco as cc

    steps = int(detector_cfg["steps"])
    batch_size = int(detector_cfg["batch_size"])
    eval_every = int(detector_cfg["eval_every"])
    max_boxes = int(detector_cfg.get("max_boxes", 16))
    checkpoint_every = int(checkpoint_every or detector_cfg.get("checkpoint_every", eval_every))

    train_set = det_data.load_detection_set(train_json, max_boxes)
    val_set = det_data.load_detection_set(val_json, max_boxes, train_set.category_ids)
    val_coco = cc.load(val_json, require_extras=False)
    boxes = train_set.boxes[train_set.valid]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    spec, summary = make_spec(detector_cfg, image_size_px, train_set.category_ids, xywh)
    log.info("%s: %d training, %d validation images", train_json, len(train_set), len(val_set))
    log.info("%s", summary)
    log.info("model %s", spec.model)

    optimizer, schedule = make_optimizer(detector_cfg, steps)
    fns = Functions(spec, optimizer, schedule, seed)
    n_params = sum(x.size for x in jax.tree.leaves(fns.initial_state["params"]))
    log.info("%d parameters, %d anchors per image", n_params, fns.anchors.shape[0])

    run = runs.RunFolder(state_dir, "detector", max_to_keep=1, async_checkpointing=True)
    run.claim(fingerprint(train_json, val_json, detector_cfg, image_size_px, seed))
    state, start = run.resume(fns.initial_state, max(run.saved_steps(), default=None))
    history = runs.History.read(run.history_path, HISTORY_COLUMNS, start)

    key = jax.random.key(seed)
    eval_key = jax.random.fold_in(jax.random.key(seed), 1 << 30)
    augment = detector_cfg.get("augment", {})
    augment_cfg = None if augment is False else det_data.AugmentConfig.from_dict(augment)
    repeat = det_data.repeat_factors(train_set.visibility, float(detector_cfg.get("repeat_threshold", 0.0)))
    groups = {g: (int(np.sum(train_set.visibility == g)), float(repeat[train_set.visibility == g][0]))
              for g in sorted(set(train_set.visibility))}
    log.info("repeat-factor sampling by visibility: %s", ", ".join(
        f"{g or 'unknown'} {n} images x{r:.2f}" for g, (n, r) in groups.items()))
    batches = det_data.batches(train_set, batch_size, seed, augment_cfg, start_step=start, repeat=repeat)

    t_window, steps_window = time.perf_counter(), 0
    t_start = time.perf_counter()
    for step in range(start + 1, steps + 1):
        batch = next(batches)
        state, metrics = fns.train_step(state, batch, key)
        steps_window += 1
        log_now = step % max(1, min(50, eval_every)) == 0 or step == steps
        evaluate_now = step % eval_every == 0 or step == steps
        checkpoint_now = step % checkpoint_every == 0 or step == steps
        if log_now or evaluate_now or checkpoint_now:  # never log or checkpoint a diverged state
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(f"detector training diverged at step {step}: {metrics}; "
                                         "lower detector.learning_rate")
        if log_now or evaluate_now:
            now = time.perf_counter()
            row = {"step": step, **{k: metrics[k] for k in ("loss", "rpn_cls", "rpn_box", "roi_cls",
                                                             "roi_box", "lr")},
                   "steps_per_s": steps_window / (now - t_window), "val_loss": "nan", "val_map50": "nan"}
            t_window, steps_window = now, 0
            if evaluate_now:
                t_eval = time.perf_counter()
                row["val_loss"], row["val_map50"] = evaluate(fns, state["params"], val_set, val_coco, eval_key)
                log.info("step %d validation: loss %.4f, mAP@0.5 %.4f (%.1f s)", step, row["val_loss"],
                         row["val_map50"], time.perf_counter() - t_eval)
                t_window = time.perf_counter()
            history.append(row)
            log.info("step %d/%d loss %.4f (rpn %.3f/%.3f roi %.3f/%.3f) lr %.4f %.2f steps/s ETA %.0f s",
                     step, steps, row["loss"], row["rpn_cls"], row["rpn_box"], row["roi_cls"], row["roi_box"],
                     row["lr"], row["steps_per_s"], (steps - step) / max(row["steps_per_s"], 1e-9))
        if checkpoint_now:
            run.save(step, state)
            history.write(run.history_path)

    run.close()
    elapsed = time.perf_counter() - t_start
    save_params(params_out, spec, state["params"])
    history.write(history_out)
    if not keep_state:
        run.remove()
    final = next((r for r in reversed(history.rows) if r["val_map50"] != "nan"), {})
    log.info("trained %d steps in %.1f s; wrote %s and %s", steps - start, elapsed, params_out, history_out)
    return {"steps": steps, "seconds": elapsed, "val_map50": final.get("val_map50"),
            "val_loss": final.get("val_loss"), "spec": json.loads(spec.to_json())}


def fingerprint(train_json, val_json, detector_cfg: dict, image_size_px: int, seed: int) -> runs.Fingerprint:
    """What a detector state depends on: the `detector` section and image size, the seed, the
    implementation, and the SHA-256 of both COCO files and of every image file they reference
    (one hash per set over the files' names and hashes: the experiments' JSON files keep their
    bytes when only the images behind them change, e.g. a retrained GAN's synthetic images)."""
    from billetjax import coco as cc

    data = {}
    for role, path in (("train", train_json), ("val", val_json)):
        records = json.loads(Path(path).read_text())["images"]
        data[f"{role} json"] = {"path": str(path), "sha256": runs.file_sha256(path)}
        data[f"{role} images"] = {"path": str(Path(path).parent),
                                  "sha256": runs.files_sha256(cc.image_path(path, r) for r in records)}
    return runs.Fingerprint(
        config={**detector_cfg, "image_size_px": image_size_px}, resumable=RESUMABLE_KEYS,
        seed=seed, implementation=runs.implementation(TRAJECTORY_MODULES), data=data)
