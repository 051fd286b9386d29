"""Matching predictions (anchors, proposals) to padded ground truth, with static shapes.

torchvision's ``Matcher`` on an IoU matrix, and what a match gives the box regression: the deltas
onto the matched box. Shared by both stages: the RPN matches anchors (`rpn.anchor_targets`), the
box head proposals (`roi_heads.sample_rois`). Ground truth comes padded to a fixed ``G`` boxes with
a validity mask; every function works on one image and returns fixed-size arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from billetjax.detector.ops import encode_boxes

# torchvision.models.detection._utils.Matcher's codes for unmatched predictions.
BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def match(
    iou: jax.Array,
    gt_valid: jax.Array,
    high_threshold: float,
    low_threshold: float,
    allow_low_quality_matches: bool,
) -> jax.Array:
    """Index ``int32[A]`` of the ground-truth box each of ``A`` predictions matches
    (torchvision Matcher on ``iou[A, G]``, i.e. its matrix transposed).

    -1 (:data:`BELOW_LOW_THRESHOLD`) where the best IoU is below ``low_threshold``, -2
    (:data:`BETWEEN_THRESHOLDS`) where it lies in ``[low, high)``. With
    ``allow_low_quality_matches`` every prediction that has the highest IoU of some ground-truth box
    (ties included) keeps its match whatever the thresholds. Ground truth with ``gt_valid`` false
    (padding) matches nothing; without any valid ground truth every prediction is -1.
    """
    return match_gt_major(
        jnp.asarray(iou).T, gt_valid, high_threshold, low_threshold, allow_low_quality_matches
    )


def match_gt_major(
    iou_t: jax.Array,
    gt_valid: jax.Array,
    high_threshold: float,
    low_threshold: float,
    allow_low_quality_matches: bool,
) -> jax.Array:
    """:func:`match` on the IoU matrix laid out ground truth first, ``iou_t[G, A]`` (torchvision's
    own orientation). Each ground-truth box's IoUs are then one contiguous row, which XLA:CPU
    computes and scans with vector instructions: for the RPN's anchors (``A`` in the tens of
    thousands, ``G`` a few dozen) the IoU, matching and one-hot work of a default training step
    took 8.0 ms against 14.5 ms on the ``[A, G]`` layout, whose rows of ``G`` are short."""
    gt_valid = jnp.asarray(gt_valid, bool)
    # IoU >= 0, so -1 for padding never wins against a real box.
    quality = jnp.where(gt_valid[:, None], iou_t, -1.0)
    matched_vals, matches = _max_and_first_argmax(quality)
    result = jnp.where(
        matched_vals < low_threshold,
        BELOW_LOW_THRESHOLD,
        jnp.where(matched_vals < high_threshold, BETWEEN_THRESHOLDS, matches),
    ).astype(jnp.int32)
    if allow_low_quality_matches:
        best_per_gt = jnp.where(gt_valid, quality.max(axis=1), jnp.inf)  # [G]
        is_best = _is_best_for_some_gt(quality, best_per_gt)
        result = jnp.where(is_best, matches, result)
    return result


# XLA:CPU's argmax and boolean any() over the short ground-truth axis are ~10x slower than
# elementwise work (measured: [8, 16320, 32] argmax 10 ms, a loop over the 32 boxes 1.4 ms), and
# G is small.
_UNROLL_ROWS = 128


def _max_and_first_argmax(quality):
    """Column maxima ``[A]`` of ``quality[G, A]`` and the first row attaining each
    (torch.max(dim=0) semantics)."""
    num_rows = quality.shape[0]
    if num_rows == 0:
        return jnp.full(quality.shape[1:], -1.0, quality.dtype), jnp.zeros(
            quality.shape[1:], jnp.int32
        )
    if num_rows > _UNROLL_ROWS:
        return quality.max(axis=0), quality.argmax(axis=0).astype(jnp.int32)
    best, index = quality[0], jnp.zeros(quality.shape[1:], jnp.int32)
    for g in range(1, num_rows):
        better = quality[g] > best  # strict: ties keep the earlier row
        best = jnp.where(better, quality[g], best)
        index = jnp.where(better, g, index)
    return best, index


def _is_best_for_some_gt(quality, best_per_gt):
    """``bool[A]``: column ``a`` of ``quality[G, A]`` attains some row's maximum ``best_per_gt[G]``."""
    num_rows, num_cols = quality.shape
    if num_rows > _UNROLL_ROWS:
        return (quality == best_per_gt[:, None]).any(axis=0)
    result = jnp.zeros((num_cols,), bool)
    for g in range(num_rows):
        result = result | (quality[g] == best_per_gt[g])
    return result


def matched_deltas(gt_boxes: jax.Array, matched: jax.Array, positive: jax.Array, boxes: jax.Array,
                   weights: Sequence[float]) -> jax.Array:
    """Regression targets ``[A, 4]`` (``encode_boxes`` with ``weights``) that move ``boxes[A, 4]``
    onto their matched ground-truth box ``gt_boxes[matched]`` where ``positive``, 0 elsewhere
    (finite everywhere: non-positive rows encode a unit box onto itself instead of padding onto
    padding)."""
    unit = jnp.array([0.0, 0.0, 1.0, 1.0], boxes.dtype)
    # A one-hot product instead of gt_boxes[matched]: XLA:CPU fuses the whole matching into a
    # gather's index computation and runs it per output element (measured 4 ms against 1 ms for
    # 16k anchors); HIGHEST keeps the f32 coordinates exact where the default would use TF32.
    one_hot = jax.nn.one_hot(matched, gt_boxes.shape[0], dtype=gt_boxes.dtype)
    matched_boxes = jnp.matmul(one_hot, gt_boxes, precision=lax.Precision.HIGHEST)
    reference = jnp.where(positive[:, None], matched_boxes, unit)
    source = jnp.where(positive[:, None], boxes, unit)
    return jnp.where(positive[:, None], encode_boxes(reference, source, weights), 0.0)


def usable_gt(gt_boxes: jax.Array, gt_valid: jax.Array) -> jax.Array:
    """``bool[G]``: valid ground truth with a positive area (a box without area has no regression
    target, so both stages treat it as padding)."""
    return (
        jnp.asarray(gt_valid, bool)
        & (gt_boxes[:, 2] > gt_boxes[:, 0])
        & (gt_boxes[:, 3] > gt_boxes[:, 1])
    )
