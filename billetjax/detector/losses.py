"""The four Faster R-CNN training losses (torchvision's definitions and normalisations)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from billetjax.detector import targets
from billetjax.detector.models import FasterRCNN
from billetjax.detector.postprocess import pool_rois, rpn_proposals
from billetjax.detector.spec import ROI_BOX_WEIGHTS, RPN_BOX_WEIGHTS, DetectorSpec

# torchvision's smooth-L1 transition point for both stages' box regression.
SMOOTH_L1_BETA = 1.0 / 9


def smooth_l1(x: jax.Array, beta: float = SMOOTH_L1_BETA) -> jax.Array:
    """torchvision's smooth-L1 (Huber / beta) per element."""
    ax = jnp.abs(x)
    return jnp.where(ax < beta, 0.5 * ax**2 / beta, ax - 0.5 * beta)


def detection_losses(model: FasterRCNN, spec: DetectorSpec, anchors: jax.Array,
                     level_sizes: tuple[int, ...], batch, key) -> dict[str, jax.Array]:
    """RPN objectness and box losses, box-head classification and box losses of a batch
    `(images, gt_boxes, gt_labels, gt_valid)`; `key` draws both stages' balanced samples."""
    images, gt_boxes, gt_labels, gt_valid = batch
    b = images.shape[0]
    hw = (spec.image_size_px, spec.image_size_px)
    rpn_key, roi_key = jax.random.split(key)
    levels, logits, deltas = model(images)

    rpn = spec.rpn
    t = jax.vmap(lambda g, v, k: targets.rpn_targets(
        anchors, g, v, k, fg_iou_threshold=rpn.fg_iou, bg_iou_threshold=rpn.bg_iou,
        num_samples=rpn.batch_size_per_image, positive_fraction=rpn.positive_fraction,
        weights=RPN_BOX_WEIGHTS))(gt_boxes, gt_valid, jax.random.split(rpn_key, b))
    sampled = t.positive | t.negative
    n_sampled = jnp.maximum(sampled.sum(), 1)
    bce = optax.sigmoid_binary_cross_entropy(logits, t.objectness)
    rpn_cls = jnp.sum(jnp.where(sampled, bce, 0.0)) / n_sampled
    rpn_box = jnp.sum(jnp.where(t.positive[..., None], smooth_l1(deltas - t.deltas), 0.0)) / n_sampled

    proposals, proposal_valid = rpn_proposals(
        logits, deltas, anchors, level_sizes, hw, rpn.pre_nms_top_n_train,
        rpn.post_nms_top_n_train, rpn.nms_iou)
    roi = spec.roi
    rt = jax.vmap(lambda p, pv, g, gl, gv, k: targets.roi_targets(
        p, pv, g, gl, gv, k, num_samples=roi.batch_size_per_image,
        positive_fraction=roi.positive_fraction, fg_iou_threshold=roi.fg_iou,
        bg_iou_threshold=roi.bg_iou, weights=ROI_BOX_WEIGHTS))(
        proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, jax.random.split(roi_key, b))
    pooled = pool_rois(levels, rt.rois, spec.model.pool_size, roi.sampling_ratio)
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
