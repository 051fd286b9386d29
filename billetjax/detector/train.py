"""Training of the Faster R-CNN: state, one jitted step, the loop with evaluation and checkpoints.

The model is initialised once, jitted, as a graph definition and its parameters; the step is a
pure function of `(state, batch, key)` under `jax.jit` with the state donated, so one training
compiles one step (and one evaluation) per shape. Randomness of step s is `fold_in(key, s)`.
A killed training resumes from the latest orbax checkpoint in its `state/` folder.
"""

from __future__ import annotations

import dataclasses
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

from billetjax import coco as cc
from billetjax import runs
from billetjax.detector import data as det_data
from billetjax.detector.models import detection_losses, init_detector
from billetjax.detector.predict import coco_results, jit_inference, padded_batches, predict_set
from billetjax.detector.spec import DetectorConfig, DetectorSpec, make_spec, save_params, training_size_px
from billetjax.coco_map import map50

log = logging.getLogger(__name__)
# orbax logs every save at INFO through absl; keep the training log readable.
logging.getLogger("absl").setLevel(logging.WARNING)

HISTORY_COLUMNS = ["step", "loss", "rpn_cls", "rpn_box", "roi_cls", "roi_box", "lr", "val_loss",
                   "val_map50", "steps_per_s"]

# `detector` keys that may change between a run and its resumption: they decide when to validate
# and to checkpoint and how to predict during validation, never the weights or the batches.
# `steps` is NOT among them: the learning rate follows a cosine over `steps` (make_optimizer), so
# a state at step s of a 900-step run is not on the trajectory of a 1200-step run; a change of
# `steps` restarts the training.
RESUMABLE_KEYS = frozenset({"eval_every", "checkpoint_every", "inference"})


def make_optimizer(cfg: DetectorConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """SGD with momentum, linear warm-up, cosine decay over `cfg.steps`, decoupled weight decay,
    gradient clipping."""
    steps = cfg.steps
    peak = float(cfg.learning_rate)
    warmup = min(int(cfg.warmup_steps), max(steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=peak * 0.001, peak_value=peak, warmup_steps=warmup, decay_steps=max(steps, warmup + 1),
        end_value=peak * float(cfg.final_lr_fraction))
    opt = optax.chain(
        optax.clip_by_global_norm(float(cfg.clip_norm)),
        optax.add_decayed_weights(float(cfg.weight_decay)),
        optax.sgd(schedule, momentum=float(cfg.momentum), nesterov=False),
    )
    return opt, schedule


class Functions:
    """The jitted functions of one detector shape: train step, validation loss, inference.

    Built once per training; the model is initialised here (`models.init_detector`, jitted) and
    the functions take plain state pytrees.
    The anchors are an argument of the compiled programs, not a constant inside them, so every
    experiment of a study (each with anchors sized from its own boxes) compiles the same
    programs, and all but the first come from the persistent compilation cache.
    `train_step`, `eval_loss` and `predict` bind this detector's anchors; the `*_fn` attributes
    are the jitted functions themselves. With `train_size_px` (training on windows,
    `spec.training_size_px`) the training step is built for images of that side, with anchors
    covering them (`train_spec`, `train_anchors`); validation and prediction use `spec`.
    """

    def __init__(self, spec: DetectorSpec, optimizer: optax.GradientTransformation,
                 schedule: optax.Schedule, seed: int, train_size_px: int | None = None):
        self.spec = spec
        self.train_spec = spec if train_size_px is None else dataclasses.replace(spec, image_size_px=train_size_px)
        self.graphdef, params = init_detector(spec.model, seed)
        anchors, self.level_sizes = spec.anchors()
        self.anchors = jnp.asarray(anchors)
        train_anchors, self.train_level_sizes = self.train_spec.anchors()
        self.train_anchors = jnp.asarray(train_anchors)
        self.optimizer = optimizer
        self.schedule = schedule
        self.initial_state = {"params": params, "opt_state": optimizer.init(params),
                              "step": jnp.zeros((), jnp.int32)}
        self.train_step_fn = jax.jit(self._train_step, donate_argnums=0)
        self.eval_loss_fn = jax.jit(self._eval_loss)
        self.predict_fn = jit_inference(spec, self.graphdef, self.level_sizes)

    def train_step(self, state, batch, key):
        return self.train_step_fn(state, batch, key, self.train_anchors)

    def eval_loss(self, params, batch, key):
        return self.eval_loss_fn(params, batch, key, self.anchors)

    def predict(self, params, images):
        return self.predict_fn(params, images, self.anchors)

    def _losses(self, params, batch, key, anchors, training=False):
        model = nnx.merge(self.graphdef, params)
        if training:
            return detection_losses(model, self.train_spec, anchors, self.train_level_sizes, batch, key)
        return detection_losses(model, self.spec, anchors, self.level_sizes, batch, key)

    def _train_step(self, state, batch, key, anchors):
        step_key = jax.random.fold_in(key, state["step"])

        def loss_fn(params):
            parts = self._losses(params, batch, step_key, anchors, training=True)
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


def validation_loss_and_map(fns: Functions, params, val: det_data.DetectionSet, val_coco: dict,
                            key) -> tuple[float, float]:
    """Validation loss (same sampling as training, fixed key, no augmentation) and mAP@0.5
    (pycocotools) of the detections on the validation set."""
    batch_size = fns.spec.inference.batch_size
    losses, weights = [], []
    for idx, n in padded_batches(len(val), batch_size):
        batch = (val.images[idx], val.boxes[idx], val.labels[idx], val.valid[idx])
        losses.append(float(fns.eval_loss(params, batch, key)))
        weights.append(n)
    dets = predict_set(fns.predict, params, val, batch_size)
    m = map50(val_coco, coco_results(dets, val.image_ids, val.category_ids))
    return float(np.average(losses, weights=weights)), float(m)


def train(train_json: str | os.PathLike, val_json: str | os.PathLike, params_out: str | os.PathLike,
          history_out: str | os.PathLike, state_dir: str | os.PathLike, cfg: DetectorConfig,
          image_size_px: int, seed: int, keep_state: bool = False) -> dict[str, Any]:
    """Train one detector and write `params_out` and `history_out` (HISTORY_COLUMNS).

    `state_dir` is a `runs.RunFolder`: the latest checkpoint there is resumed when its fingerprint
    (config without RESUMABLE_KEYS, seed, implementation, data files) is this run's, else
    training starts afresh; the running history lives there too, so a killed job loses at most
    `cfg.checkpoint_every` steps. The state is deleted after success unless `keep_state`.
    Returns a summary dict.
    """
    steps, batch_size, max_boxes = cfg.steps, cfg.batch_size, cfg.max_boxes
    eval_every, checkpoint_every = cfg.eval_every, cfg.checkpoint_every

    train_set = det_data.load_detection_set(train_json, max_boxes)
    val_set = det_data.load_detection_set(val_json, max_boxes, train_set.category_ids)
    val_coco = cc.load(val_json, require_extras=False)
    boxes = train_set.boxes[train_set.valid]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    spec, summary = make_spec(cfg, image_size_px, train_set.category_ids, xywh)
    log.info("%s: %d training, %d validation images", train_json, len(train_set), len(val_set))
    log.info("%s", summary)
    log.info("model %s", spec.model)

    optimizer, schedule = make_optimizer(cfg)
    train_size = training_size_px(cfg, image_size_px, xywh)
    fns = Functions(spec, optimizer, schedule, seed, train_size_px=train_size)
    n_params = sum(x.size for x in jax.tree.leaves(fns.initial_state["params"]))
    log.info("%d parameters, %d anchors per image", n_params, fns.anchors.shape[0])
    if train_size != image_size_px:
        log.info("training on random %d x %d windows of the %d x %d images (%d anchors each)",
                 train_size, train_size, image_size_px, image_size_px, fns.train_anchors.shape[0])

    run = runs.RunFolder(state_dir, "detector", max_to_keep=1, async_checkpointing=True)
    run.claim(fingerprint(train_json, val_json, cfg, image_size_px, seed))
    state, start = run.resume(fns.initial_state, max(run.saved_steps(), default=None))
    history = runs.History.read(run.history_path, HISTORY_COLUMNS, start)

    key = jax.random.key(seed)
    eval_key = jax.random.fold_in(jax.random.key(seed), 1 << 30)
    repeat = det_data.repeat_factors(train_set.visibility, float(cfg.repeat_threshold))
    groups = {g: (int(np.sum(train_set.visibility == g)), float(repeat[train_set.visibility == g][0]))
              for g in sorted(set(train_set.visibility))}
    log.info("repeat-factor sampling by visibility: %s", ", ".join(
        f"{g or 'unknown'} {n} images x{r:.2f}" for g, (n, r) in groups.items()))
    if train_set.batch_plan is None:
        batches = det_data.batches(train_set, batch_size, seed, cfg.augment, start_step=start, repeat=repeat)
    else:
        batches = det_data.planned_batches(train_set, batch_size, seed, cfg.augment, train_set.batch_plan, steps,
                                           start_step=start, repeat=repeat)

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
                row["val_loss"], row["val_map50"] = validation_loss_and_map(fns, state["params"], val_set,
                                                                             val_coco, eval_key)
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


def fingerprint(train_json, val_json, cfg: DetectorConfig, image_size_px: int, seed: int) -> runs.Fingerprint:
    """What a detector state depends on: the `detector` section and image size, the seed, the
    implementation (the source of every `runs.trajectory_modules` and the numeric libraries'
    versions), and the SHA-256 of both COCO files and of every image file they reference
    (one hash per set over the files' names and hashes: the experiments' JSON files keep their
    bytes when only the images behind them change, e.g. a retrained GAN's synthetic images)."""
    data = {}
    for role, path in (("train", train_json), ("val", val_json)):
        records = json.loads(Path(path).read_text())["images"]
        data[f"{role} json"] = {"path": str(path), "sha256": runs.file_sha256(path)}
        data[f"{role} images"] = {"path": str(Path(path).parent),
                                  "sha256": runs.files_sha256(cc.image_path(path, r) for r in records)}
    return runs.Fingerprint(
        config={**cfg.to_config(), "image_size_px": image_size_px}, resumable=RESUMABLE_KEYS,
        seed=seed, implementation=runs.implementation(runs.trajectory_modules(__name__)), data=data)


