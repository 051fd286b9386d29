"""Faster R-CNN (Ren et al. 2015) put together: the model and its two passes.

`FasterRCNN` holds the trainable modules: `backbone.Backbone`, `backbone.FPN`, `rpn.RPNHead`
and `roi_heads.BoxHead`. `detection_losses` is the training pass (the RPN's losses, its
proposals, the box head's losses), `inference` the prediction pass (proposals, detections);
each stage's work is done by its own module (`rpn`, `roi_heads`), this one only wires them
(torchvision's ``GeneralizedRCNN``, detectron2's ``meta_arch/rcnn.py``).

Images are NHWC uint8 (or float in [0, 255]); features are NHWC. The model knows nothing about
files.

Precision (`ModelConfig.precision`): parameters are always float32. With "bfloat16" every
convolution, normalisation and dense layer computes in bfloat16 (mixed precision: the layers cast
their float32 parameters; GroupNorm's statistics stay float32), the FPN levels are bfloat16, and
the heads' outputs (objectness, box deltas, class logits) are cast back to float32, so the losses
and everything after them are float32. bfloat16 has float32's exponent range: no loss scaling.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from billetjax.detector import roi_heads, rpn
from billetjax.detector.backbone import FPN, Backbone, compute_dtype
from billetjax.detector.spec import DetectorSpec, ModelConfig

# ImageNet's RGB statistics; any fixed normalisation works for a model trained from scratch.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class FasterRCNN(nnx.Module):
    """The trainable parts of the two-stage detector: backbone, FPN, the RPN's head and the box
    head. Its call runs the first stage's network; `detection_losses` and `inference` run the
    rest."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = compute_dtype(cfg.precision)
        self.backbone = Backbone(cfg, rngs)
        self.fpn = FPN(cfg.widths, cfg.fpn_width, rngs, dtype)
        self.rpn = rpn.RPNHead(cfg.fpn_width, cfg.anchors_per_location, rngs, dtype)
        self.box_head = roi_heads.BoxHead(cfg.fpn_width * cfg.pool_size**2, cfg.head_width,
                                          cfg.num_classes, rngs, dtype)

    def features(self, images: jax.Array) -> list[jax.Array]:
        """FPN levels (strides 4, 8, ...) of uint8/float RGB images `[B, H, W, 3]`, in the
        compute dtype."""
        x = (images.astype(jnp.float32) - jnp.asarray(PIXEL_MEAN)) / jnp.asarray(PIXEL_STD)
        return self.fpn(self.backbone(x))

    def __call__(self, images: jax.Array):
        levels = self.features(images)
        logits, deltas = self.rpn(levels[: self.cfg.anchor_levels])
        return levels, logits, deltas


def init_detector(cfg: ModelConfig, seed: int) -> tuple[nnx.GraphDef, nnx.State]:
    """`(graphdef, params)` of a freshly initialised `FasterRCNN(cfg, nnx.Rngs(seed))`.

    The initialisers run as one jitted program with the key as its argument: eagerly they are
    dozens of small computations, each compiled on its own (about 6 s per training on 2 CPU
    cores); jitted, every seed and every experiment of a shape share one program, which the
    persistent compilation cache keeps.
    """
    graphdef, _ = abstract_detector(cfg)
    return graphdef, _init_params(cfg, jax.random.key(seed))


def abstract_detector(cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """`(graphdef, params)` of a `FasterRCNN(cfg)` whose parameters are shapes only
    (`jax.ShapeDtypeStruct`): its structure, without computing any weights."""
    return nnx.split(nnx.eval_shape(lambda: FasterRCNN(cfg, nnx.Rngs(0))), nnx.Param)


@functools.partial(jax.jit, static_argnums=0)
def _init_params(cfg: ModelConfig, key: jax.Array) -> nnx.State:
    return nnx.state(FasterRCNN(cfg, nnx.Rngs(key)), nnx.Param)


def detection_losses(model: FasterRCNN, spec: DetectorSpec, anchors: jax.Array,
                     level_sizes: tuple[int, ...], batch, key) -> dict[str, jax.Array]:
    """The four training losses of a batch `(images, gt_boxes, gt_labels, gt_valid)`: the RPN's
    objectness and box losses (`rpn.losses`), then, on the RPN's proposals, the box head's
    classification and box losses (`roi_heads.losses`); `key` draws both stages' samples."""
    images, gt_boxes, gt_labels, gt_valid = batch
    hw = (spec.image_size_px, spec.image_size_px)
    rpn_key, roi_key = jax.random.split(key)
    levels, logits, deltas = model(images)
    rpn_losses = rpn.losses(logits, deltas, anchors, gt_boxes, gt_valid, rpn_key, spec.rpn)
    proposals, proposal_valid = rpn.proposals(
        logits, deltas, anchors, level_sizes, hw, spec.rpn.pre_nms_top_n_train,
        spec.rpn.post_nms_top_n_train, spec.rpn.nms_iou)
    roi_losses = roi_heads.losses(model.box_head, levels, proposals, proposal_valid, gt_boxes, gt_labels,
                                  gt_valid, roi_key, spec.roi, spec.model.pool_size)
    return {**rpn_losses, **roi_losses}


def inference(model: FasterRCNN, spec: DetectorSpec, images: jax.Array, anchors: jax.Array,
              level_sizes: tuple[int, ...]) -> dict[str, jax.Array]:
    """Detections of a batch of images `[B, H, W, 3]` (arrays `[B, max_detections, ...]`): the
    RPN's proposals (`rpn.proposals`), then the box head's detections (`roi_heads.detections`)."""
    hw = (spec.image_size_px, spec.image_size_px)
    levels, logits, deltas = model(images)
    rois, roi_valid = rpn.proposals(
        logits, deltas, anchors, level_sizes, hw, spec.rpn.pre_nms_top_n_test,
        spec.rpn.post_nms_top_n_test, spec.rpn.nms_iou)
    return roi_heads.detections(model.box_head, levels, rois, roi_valid, hw, spec.model.pool_size,
                                spec.roi.sampling_ratio, spec.inference)
