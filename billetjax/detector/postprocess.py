"""From the model's outputs to proposals and detections, with static shapes.

Pure functions of the outputs of `models.FasterRCNN`, vmapped over the images of a batch:
region proposals (torchvision's RegionProposalNetwork.filter_proposals), RoIAlign of the
proposals, and the final per-class detections (RoIHeads.postprocess_detections). `inference`
runs the whole detector on a batch of images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from billetjax.config import STEM_STRIDE
from billetjax.detector import ops
from billetjax.detector.models import FasterRCNN
from billetjax.detector.spec import ROI_BOX_WEIGHTS, RPN_BOX_WEIGHTS, DetectorSpec

# torchvision's smallest box sides (px): a proposal (RegionProposalNetwork's min_size) and a
# detection (RoIHeads' remove_small_boxes).
MIN_PROPOSAL_SIZE_PX = 1e-3
MIN_DETECTION_SIZE_PX = 1e-2
# Detections go through the per-class NMS from this many best (box, class) candidates, a static
# count: the NMS loop costs one pass per kept box.
DETECTION_CANDIDATES = 1000


def _proposals_one(logits, deltas, anchors, level_sizes, image_hw, pre_nms_top_n, post_nms_top_n,
                   nms_iou, min_size):
    """Proposals of one image: top-k per level, decode, clip, NMS per level -> fixed count."""
    boxes, scores, levels = [], [], []
    start = 0
    for level, n in enumerate(level_sizes):
        k = min(pre_nms_top_n, n)
        top_scores, top = jax.lax.top_k(logits[start:start + n], k)
        decoded = ops.decode_boxes(deltas[start:start + n][top], anchors[start:start + n][top],
                                   weights=RPN_BOX_WEIGHTS)
        boxes.append(ops.clip_boxes(decoded, *image_hw))
        scores.append(top_scores)
        levels.append(jnp.full((k,), level, jnp.int32))
        start += n
    boxes, scores, levels = (jnp.concatenate(x) for x in (boxes, scores, levels))
    wh = boxes[:, 2:] - boxes[:, :2]
    valid = (wh[:, 0] >= min_size) & (wh[:, 1] >= min_size) & jnp.isfinite(scores)
    keep = ops.batched_nms(boxes, scores, levels, nms_iou, post_nms_top_n, valid=valid)
    ok = keep >= 0
    safe = jnp.maximum(keep, 0)
    return jnp.where(ok[:, None], boxes[safe], 0.0), ok


def rpn_proposals(logits, deltas, anchors, level_sizes, image_hw, pre_nms_top_n: int,
                  post_nms_top_n: int, nms_iou: float, min_size: float = MIN_PROPOSAL_SIZE_PX):
    """Region proposals `[B, post_nms_top_n, 4]` and their validity `[B, post_nms_top_n]`.

    torchvision's RegionProposalNetwork.filter_proposals with static shapes: the `pre_nms_top_n`
    best anchors of each level, decoded and clipped, NMS within each level, then the
    `post_nms_top_n` best over all levels (fewer survivors are padded, valid = False).
    No gradient flows through proposals.
    """
    logits, deltas = jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas)
    fn = lambda lo, de: _proposals_one(lo, de, anchors, tuple(level_sizes), tuple(image_hw),
                                       pre_nms_top_n, post_nms_top_n, nms_iou, min_size)
    return jax.vmap(fn)(logits, deltas)


def pool_rois(levels: list[jax.Array], rois: jax.Array, pool_size: int, sampling_ratio: int):
    """RoIAlign of `rois[B, R, 4]` on the finest FPN level (stride 4): `[B * R, p, p, C]`.

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


def inference(model: FasterRCNN, spec: DetectorSpec, images: jax.Array, anchors: jax.Array,
              level_sizes: tuple[int, ...]) -> dict[str, jax.Array]:
    """Detections of a batch of images `[B, H, W, 3]` (arrays `[B, max_detections, ...]`)."""
    hw = (spec.image_size_px, spec.image_size_px)
    levels, logits, deltas = model(images)
    rois, roi_valid = rpn_proposals(
        logits, deltas, anchors, level_sizes, hw, spec.rpn.pre_nms_top_n_test,
        spec.rpn.post_nms_top_n_test, spec.rpn.nms_iou)
    pooled = pool_rois(levels, rois, spec.model.pool_size, spec.roi.sampling_ratio)
    cls_logits, box_deltas = model.box_head(pooled)
    b, r = rois.shape[:2]
    inf = spec.inference
    return detect(cls_logits.reshape(b, r, -1), box_deltas.reshape(b, r, -1, 4), rois, roi_valid,
                  hw, inf.score_threshold, inf.nms_iou, inf.max_detections)
