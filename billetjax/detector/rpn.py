"""The region proposal network (Ren et al. 2015), all of it: its head, its anchors' training
targets, its two losses, and its proposals.

torchvision's ``RPNHead`` and ``RegionProposalNetwork`` with static shapes: every image has the
same anchors, ``batch_size_per_image`` sampled anchors and ``post_nms_top_n`` proposals (padded,
with a validity mask). Built on the shared primitives: `matcher` (which anchor matches which
ground-truth box), `sampling` (the balanced sample), `ops` (box coder, NMS, smooth-L1).
The anchors themselves are made by `anchors` and laid out by `spec.DetectorSpec.anchors`.
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
from billetjax.detector.matcher import BELOW_LOW_THRESHOLD, match_gt_major, matched_deltas, usable_gt
from billetjax.detector.sampling import sample_balanced
from billetjax.detector.spec import RPNConfig

# The RPN's box coder has unit weights (torchvision's).
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
# torchvision's smallest side of a proposal (RegionProposalNetwork's min_size), px.
MIN_PROPOSAL_SIZE_PX = 1e-3


# ----------------------------------------------------------------------------- head


class RPNHead(nnx.Module):
    """Shared 3x3 conv, then per-anchor objectness logits and box deltas at every level."""

    def __init__(self, width: int, anchors: int, rngs: nnx.Rngs, dtype):
        init = nnx.initializers.normal(0.01)
        self.conv = nnx.Conv(width, width, (3, 3), kernel_init=init, dtype=dtype, rngs=rngs)
        self.cls = nnx.Conv(width, anchors, (1, 1), kernel_init=init, dtype=dtype, rngs=rngs)
        self.box = nnx.Conv(width, 4 * anchors, (1, 1), kernel_init=init, dtype=dtype, rngs=rngs)

    def __call__(self, levels: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
        """Objectness `[B, N]` and deltas `[B, N, 4]` (float32), N = sum over levels of H*W*A in
        the (level, y, x, anchor) order of `anchors.anchor_grid`."""
        logits, deltas = [], []
        for x in levels:
            t = jax.nn.relu(self.conv(x))
            b = x.shape[0]
            logits.append(self.cls(t).reshape(b, -1))
            deltas.append(self.box(t).reshape(b, -1, 4))
        return (jnp.concatenate(logits, axis=1).astype(jnp.float32),
                jnp.concatenate(deltas, axis=1).astype(jnp.float32))


# ----------------------------------------------------------------------------- targets and losses


class RPNTargets(NamedTuple):
    """Per-anchor RPN targets of one image (all ``[A]`` or ``[A, 4]``)."""

    objectness: jax.Array  # float32 1 for a positive anchor, 0 otherwise
    deltas: jax.Array  # float32 [A, 4] box deltas onto the matched box (0 where not positive)
    positive: jax.Array  # bool: sampled positive -> box regression and objectness loss
    negative: jax.Array  # bool: sampled negative -> objectness loss


def anchor_targets(
    anchors: jax.Array,
    gt_boxes: jax.Array,
    gt_valid: jax.Array,
    key: jax.Array,
    *,
    fg_iou_threshold: float,
    bg_iou_threshold: float,
    num_samples: int,
    positive_fraction: float,
    weights: Sequence[float],
) -> RPNTargets:
    """RPN targets of one image (torchvision RegionProposalNetwork.assign_targets_to_anchors
    and its sampler): anchors ``[A, 4]`` matched to padded ground truth ``gt_boxes[G, 4]`` /
    ``gt_valid[G]`` with low-quality matches allowed, then ``num_samples`` anchors sampled with
    ``positive_fraction`` positives. Ground-truth boxes without area count as padding.
    `losses` turns them into the RPN's losses.
    """
    anchors = jnp.asarray(anchors, jnp.float32)
    gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
    gt_valid = usable_gt(gt_boxes, gt_valid)
    matched = match_gt_major(
        ops.box_iou(gt_boxes, anchors), gt_valid, fg_iou_threshold, bg_iou_threshold, True
    )
    labels = jnp.where(matched >= 0, 1, jnp.where(matched == BELOW_LOW_THRESHOLD, 0, -1))
    positive, negative = sample_balanced(key, labels, num_samples, positive_fraction)
    deltas = matched_deltas(gt_boxes, matched, matched >= 0, anchors, weights)
    return RPNTargets(
        objectness=(matched >= 0).astype(jnp.float32),
        deltas=lax.stop_gradient(deltas),
        positive=positive,
        negative=negative,
    )


def losses(logits: jax.Array, deltas: jax.Array, anchors: jax.Array, gt_boxes: jax.Array,
           gt_valid: jax.Array, key: jax.Array, cfg: RPNConfig) -> dict[str, jax.Array]:
    """The RPN's two losses over a batch (torchvision's): ``rpn_cls``, the binary cross-entropy of
    the objectness `logits[B, A]` on the sampled anchors, and ``rpn_box``, the smooth-L1 of the
    `deltas[B, A, 4]` on the positive ones, both summed and divided by the number sampled.
    Ground truth is padded (`gt_boxes[B, G, 4]`, `gt_valid[B, G]`); `key` draws every image's
    balanced sample (`anchor_targets`)."""
    b = logits.shape[0]
    t = jax.vmap(lambda g, v, k: anchor_targets(
        anchors, g, v, k, fg_iou_threshold=cfg.fg_iou, bg_iou_threshold=cfg.bg_iou,
        num_samples=cfg.batch_size_per_image, positive_fraction=cfg.positive_fraction,
        weights=RPN_BOX_WEIGHTS))(gt_boxes, gt_valid, jax.random.split(key, b))
    sampled = t.positive | t.negative
    n_sampled = jnp.maximum(sampled.sum(), 1)
    bce = optax.sigmoid_binary_cross_entropy(logits, t.objectness)
    rpn_cls = jnp.sum(jnp.where(sampled, bce, 0.0)) / n_sampled
    rpn_box = jnp.sum(jnp.where(t.positive[..., None], ops.smooth_l1(deltas - t.deltas), 0.0)) / n_sampled
    return {"rpn_cls": rpn_cls, "rpn_box": rpn_box}


# ----------------------------------------------------------------------------- proposals


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


def proposals(logits, deltas, anchors, level_sizes, image_hw, pre_nms_top_n: int,
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
