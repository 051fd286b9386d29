"""The box head (the second stage of Faster R-CNN), all of it: its head, the sampling of
proposals into RoIs with their training targets, RoI pooling, its two losses, and the final
detections.

torchvision's ``RoIHeads`` (with ``TwoMLPHead`` and ``FastRCNNPredictor``) with static shapes:
every image has ``batch_size_per_image`` sampled RoIs (padded, with a validity mask) and at most
``max_detections`` detections. Built on the shared primitives: `matcher`, `sampling`, `ops`
(RoIAlign, box coder, batched NMS, smooth-L1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from billetjax.detector import ops
from billetjax.detector.geometry import STEM_STRIDE
from billetjax.detector.matcher import BELOW_LOW_THRESHOLD, match, matched_deltas, usable_gt
from billetjax.detector.sampling import sample_balanced_indices
from billetjax.detector.spec import InferenceConfig, RoIConfig

# The box head's box coder (torchvision's weights).
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# torchvision's smallest side of a detection (RoIHeads' remove_small_boxes), px.
MIN_DETECTION_SIZE_PX = 1e-2
# Detections go through the per-class NMS from this many best (box, class) candidates, a static
# count: the NMS loop costs one pass per kept box.
DETECTION_CANDIDATES = 1000


# ----------------------------------------------------------------------------- head


class BoxHead(nnx.Module):
    """Two fully connected layers on pooled RoIs, then class logits (background = 0) and
    class-specific box deltas `[K, num_classes + 1, 4]` (both float32)."""

    def __init__(self, in_features: int, width: int, num_classes: int, rngs: nnx.Rngs, dtype):
        self.fc1 = nnx.Linear(in_features, width, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(width, width, dtype=dtype, rngs=rngs)
        self.cls = nnx.Linear(width, num_classes + 1, kernel_init=nnx.initializers.normal(0.01),
                              dtype=dtype, rngs=rngs)
        self.box = nnx.Linear(width, 4 * (num_classes + 1),
                              kernel_init=nnx.initializers.normal(0.001), dtype=dtype, rngs=rngs)

    def embed(self, pooled: jax.Array) -> jax.Array:
        """The head's representation of pooled RoIs `[K, p, p, C]`: the second layer's `[K, width]`,
        from which the classes and boxes are read (also the feature space of the domain gap)."""
        x = pooled.reshape(pooled.shape[0], -1)
        return jax.nn.relu(self.fc2(jax.nn.relu(self.fc1(x))))

    def __call__(self, pooled: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = self.embed(pooled)
        return (self.cls(x).astype(jnp.float32),
                self.box(x).reshape(x.shape[0], -1, 4).astype(jnp.float32))


# ----------------------------------------------------------------------------- RoIs, pooling, losses


class RoITargets(NamedTuple):
    """Sampled RoIs of one image and their box-head targets (all ``[num_samples, ...]``)."""

    rois: jax.Array  # float32 [S, 4] sampled proposals (ground-truth boxes included)
    labels: jax.Array  # int32 [S]: class of the matched box, 0 for background
    deltas: jax.Array  # float32 [S, 4] deltas onto the matched box (0 where not positive)
    positive: jax.Array  # bool [S]: foreground -> regression loss of its class's deltas
    valid: jax.Array  # bool [S]: a real sample -> classification loss (false for padding)
    index: jax.Array  # int32 [S]: row of concat(proposals, gt_boxes) each sample was taken from


def sample_rois(
    proposals: jax.Array,
    proposal_valid: jax.Array,
    gt_boxes: jax.Array,
    gt_labels: jax.Array,
    gt_valid: jax.Array,
    key: jax.Array,
    *,
    num_samples: int,
    positive_fraction: float,
    fg_iou_threshold: float,
    bg_iou_threshold: float,
    weights: Sequence[float],
) -> RoITargets:
    """Box-head targets of one image (torchvision RoIHeads.select_training_samples).

    ``proposals[P, 4]`` with ``proposal_valid[P]`` (false for NMS padding), padded ground truth
    ``gt_boxes[G, 4]``, ``gt_labels[G]`` (classes 1..K; 0 is background) and ``gt_valid[G]``. The
    valid ground-truth boxes join the proposals; each candidate matches its best box (IoU >=
    ``fg_iou_threshold`` foreground, < ``bg_iou_threshold`` background, between ignored, no
    low-quality matches), then ``num_samples`` are drawn with ``positive_fraction`` foreground.
    Without enough candidates the remaining slots are padding (``valid`` false). Ground-truth
    boxes without area count as padding. `losses` turns them into the box head's losses.
    """
    proposals = jnp.asarray(proposals, jnp.float32)
    gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
    gt_valid = usable_gt(gt_boxes, gt_valid)
    candidates = jnp.concatenate([proposals, gt_boxes], axis=0)
    candidate_valid = jnp.concatenate([jnp.asarray(proposal_valid, bool), gt_valid])
    matched = match(
        ops.box_iou(candidates, gt_boxes), gt_valid, fg_iou_threshold, bg_iou_threshold, False
    )
    labels = jnp.where(matched >= 0, 1, jnp.where(matched == BELOW_LOW_THRESHOLD, 0, -1))
    labels = jnp.where(candidate_valid, labels, -1)
    indices, is_positive, valid = sample_balanced_indices(
        key, labels, num_samples, positive_fraction
    )
    rois = candidates[indices]
    roi_matched = matched[indices]
    positive = is_positive & valid
    # One-hot lookup: also defined for G = 0 (no ground-truth slots at all).
    matched_label = (
        jax.nn.one_hot(roi_matched, gt_boxes.shape[0], dtype=jnp.int32)
        * jnp.asarray(gt_labels, jnp.int32)
    ).sum(1)
    classes = jnp.where(positive, matched_label, 0)
    deltas = matched_deltas(gt_boxes, roi_matched, positive, rois, weights)
    return RoITargets(
        rois=lax.stop_gradient(rois),
        labels=classes,
        deltas=lax.stop_gradient(deltas),
        positive=positive,
        valid=valid,
        index=indices,
    )


def pool_rois(levels: list[jax.Array], rois: jax.Array, pool_size: int, sampling_ratio: int):
    """RoIAlign of `rois[B, R, 4]` on the finest FPN level (stride `STEM_STRIDE`): `[B * R, p, p, C]`.

    torchvision's level mapper (canonical size 224 at level 4, clamped to the levels present)
    sends every box below 448 px to the finest level; our characters are 10-60 px, so a single
    level is the same rule without computing RoIAlign on every level (at the paper's scale,
    characters of 60-120 px, too). Pooled in float32 whatever the model's precision: RoIAlign's
    gradient is a scatter-add, which bfloat16 would round at every addition.
    """
    b, r = rois.shape[:2]
    batch_index = jnp.repeat(jnp.arange(b, dtype=jnp.int32), r)
    return ops.roi_align(levels[0].astype(jnp.float32), rois.reshape(b * r, 4), batch_index, pool_size,
                         spatial_scale=1.0 / STEM_STRIDE, sampling_ratio=sampling_ratio, aligned=True)


def losses(box_head: BoxHead, levels: list[jax.Array], proposals: jax.Array, proposal_valid: jax.Array,
           gt_boxes: jax.Array, gt_labels: jax.Array, gt_valid: jax.Array, key: jax.Array,
           cfg: RoIConfig, pool_size: int) -> dict[str, jax.Array]:
    """The box head's two losses over a batch (torchvision's fastrcnn_loss): ``roi_cls``, the
    cross-entropy of the class logits over the valid sampled RoIs, and ``roi_box``, the smooth-L1
    of the matched class's deltas on the foreground ones, both divided by the number of valid
    RoIs. `proposals[B, P, 4]` / `proposal_valid[B, P]` come from the RPN; `key` draws every
    image's sample (`sample_rois`); the RoIs are pooled from the FPN `levels` (`pool_rois`)."""
    b = proposals.shape[0]
    rt = jax.vmap(lambda p, pv, g, gl, gv, k: sample_rois(
        p, pv, g, gl, gv, k, num_samples=cfg.batch_size_per_image,
        positive_fraction=cfg.positive_fraction, fg_iou_threshold=cfg.fg_iou,
        bg_iou_threshold=cfg.bg_iou, weights=ROI_BOX_WEIGHTS))(
        proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, jax.random.split(key, b))
    pooled = pool_rois(levels, rt.rois, pool_size, cfg.sampling_ratio)
    cls_logits, box_deltas = box_head(pooled)
    labels = rt.labels.reshape(-1)
    valid = rt.valid.reshape(-1)
    positive = rt.positive.reshape(-1)
    n_rois = jnp.maximum(valid.sum(), 1)
    ce = optax.softmax_cross_entropy_with_integer_labels(cls_logits, labels)
    roi_cls = jnp.sum(jnp.where(valid, ce, 0.0)) / n_rois
    class_deltas = jnp.take_along_axis(box_deltas, labels[:, None, None], axis=1)[:, 0]
    roi_box = jnp.sum(jnp.where(positive[:, None],
                                ops.smooth_l1(class_deltas - rt.deltas.reshape(-1, 4)), 0.0)) / n_rois
    return {"roi_cls": roi_cls, "roi_box": roi_box}


# ----------------------------------------------------------------------------- detections


def _detect_one(cls_logits, box_deltas, rois, roi_valid, image_hw, score_threshold, nms_iou,
                max_detections, pre_nms_top_n):
    r, k1 = cls_logits.shape
    probs = jax.nn.softmax(cls_logits, axis=-1)
    boxes = ops.clip_boxes(ops.decode_boxes(box_deltas, rois[:, None, :], weights=ROI_BOX_WEIGHTS),
                           *image_hw)  # [R, K+1, 4]
    scores = probs[:, 1:].reshape(-1)
    boxes = boxes[:, 1:].reshape(-1, 4)
    labels = jnp.tile(jnp.arange(1, k1, dtype=jnp.int32), r)
    roi_index = jnp.repeat(jnp.arange(r, dtype=jnp.int32), k1 - 1)
    wh = boxes[:, 2:] - boxes[:, :2]
    ok = ((scores > score_threshold) & jnp.repeat(roi_valid, k1 - 1)
          & (wh[:, 0] >= MIN_DETECTION_SIZE_PX) & (wh[:, 1] >= MIN_DETECTION_SIZE_PX))
    top_scores, top = jax.lax.top_k(jnp.where(ok, scores, -1.0), min(pre_nms_top_n, scores.shape[0]))
    keep = ops.batched_nms(boxes[top], top_scores, labels[top], nms_iou, max_detections,
                           valid=top_scores > score_threshold)
    found = keep >= 0
    pick = top[jnp.maximum(keep, 0)]
    # Softmax over the characters alone (background left out), for billet-ID decoding.
    class_scores = jax.nn.softmax(cls_logits[:, 1:], axis=-1)[roi_index[pick]]
    return {
        "boxes": jnp.where(found[:, None], boxes[pick], 0.0),
        "scores": jnp.where(found, scores[pick], 0.0),
        "labels": jnp.where(found, labels[pick], 0),
        "class_scores": class_scores,
        "valid": found,
    }


def detect(cls_logits, box_deltas, rois, roi_valid, image_hw, score_threshold: float,
           nms_iou: float, max_detections: int, pre_nms_top_n: int = DETECTION_CANDIDATES):
    """Final detections per image (torchvision's RoIHeads.postprocess_detections, static shapes).

    `cls_logits[B, R, K+1]`, `box_deltas[B, R, K+1, 4]`, `rois[B, R, 4]`: per-class boxes and
    scores, score threshold, per-class NMS, at most `max_detections` per image. Returns arrays
    `[B, max_detections, ...]` with `valid` marking real detections; labels are 1..K.
    """
    fn = lambda c, d, r, v: _detect_one(c, d, r, v, tuple(image_hw), score_threshold, nms_iou,
                                        max_detections, pre_nms_top_n)
    return jax.vmap(fn)(cls_logits, box_deltas, rois, roi_valid)


def detections(box_head: BoxHead, levels: list[jax.Array], rois: jax.Array, roi_valid: jax.Array,
               image_hw: tuple[int, int], pool_size: int, sampling_ratio: int,
               cfg: InferenceConfig) -> dict[str, jax.Array]:
    """The box head on the RPN's proposals `rois[B, R, 4]` / `roi_valid[B, R]`: RoIs pooled from
    the FPN `levels`, classified and regressed, then `detect` with `cfg`'s threshold, NMS and
    count (arrays `[B, max_detections, ...]`)."""
    pooled = pool_rois(levels, rois, pool_size, sampling_ratio)
    cls_logits, box_deltas = box_head(pooled)
    b, r = rois.shape[:2]
    return detect(cls_logits.reshape(b, r, -1), box_deltas.reshape(b, r, -1, 4), rois, roi_valid,
                  image_hw, cfg.score_threshold, cfg.nms_iou, cfg.max_detections)
