"""Training targets of the RPN and the box head with static shapes.

Ground truth comes padded to a fixed ``G`` boxes with a validity mask; every function works on one
image and returns fixed-size arrays, so a batch is ``jax.vmap`` over images. Semantics follow
torchvision's ``Matcher``, ``BalancedPositiveNegativeSampler``, ``RegionProposalNetwork`` and
``RoIHeads``; the random sampling is a random ``top_k`` over boolean masks (as scenic and the TF
Object Detection API), so it agrees with torchvision in counts and distribution, not draw by draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from billetjax.detector.ops import box_iou, encode_boxes

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


def _top_k_of_mask(mask, random_keys, k):
    """Indices ``[k]`` of up to ``k`` random true entries of ``mask``, valid ones first, and
    their validity ``bool[k]``."""
    scores = jnp.where(mask, random_keys, -1.0)  # random_keys are in [0, 1)
    values, indices = lax.top_k(scores, k)
    return indices.astype(jnp.int32), values >= 0


def sample_balanced_indices(
    key: jax.Array,
    labels: jax.Array,
    num_samples: int,
    positive_fraction: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fixed-size balanced sample of ``labels[A]`` (1 positive, 0 negative, -1 ignored).

    Returns ``(indices int32[num_samples], is_positive bool[num_samples], valid
    bool[num_samples])``: first up to ``int(num_samples * positive_fraction)`` random positives,
    then random negatives filling up to ``num_samples`` (torchvision
    BalancedPositiveNegativeSampler's counts); slots beyond the available boxes are not valid.
    """
    num_samples = int(num_samples)
    labels = jnp.asarray(labels)
    num_boxes = labels.shape[0]
    if num_boxes == 0:
        empty = jnp.zeros((num_samples,), bool)
        return jnp.zeros((num_samples,), jnp.int32), empty, empty
    max_positive = int(num_samples * positive_fraction)
    random_keys = jax.random.uniform(key, (num_boxes,))
    k_pos = min(max_positive, num_boxes)
    k_neg = min(num_samples, num_boxes)
    pos_idx, pos_ok = _top_k_of_mask(labels == 1, random_keys, k_pos)
    neg_idx, neg_ok = _top_k_of_mask(labels == 0, random_keys, k_neg)
    pos_idx = jnp.pad(pos_idx, (0, num_samples - k_pos))
    pos_ok = jnp.pad(pos_ok, (0, num_samples - k_pos))
    neg_idx = jnp.pad(neg_idx, (0, num_samples - k_neg))
    neg_ok = jnp.pad(neg_ok, (0, num_samples - k_neg))
    num_pos = pos_ok.sum()
    slot = jnp.arange(num_samples)
    from_neg = jnp.clip(slot - num_pos, 0, num_samples - 1)
    is_positive = slot < num_pos
    indices = jnp.where(is_positive, pos_idx, neg_idx[from_neg])
    valid = is_positive | ((slot >= num_pos) & neg_ok[from_neg])
    return indices, is_positive, valid


def sample_balanced(
    key: jax.Array,
    labels: jax.Array,
    num_samples: int,
    positive_fraction: float,
) -> tuple[jax.Array, jax.Array]:
    """Masks ``(positive bool[A], negative bool[A])`` of a balanced sample of ``labels[A]``
    (1 positive, 0 negative, -1 ignored): at most ``num_samples * positive_fraction`` positives,
    negatives filling up to ``num_samples``, chosen at random
    (see :func:`sample_balanced_indices`)."""
    num_boxes = jnp.shape(labels)[0]
    indices, is_positive, valid = sample_balanced_indices(
        key, labels, num_samples, positive_fraction
    )
    # Invalid slots scatter to an extra bin that is cut off.
    target = jnp.where(valid, indices, num_boxes)
    pos = jnp.zeros((num_boxes + 1,), bool).at[target].max(is_positive & valid)[:num_boxes]
    neg = jnp.zeros((num_boxes + 1,), bool).at[target].max(~is_positive & valid)[:num_boxes]
    return pos, neg


def _matched_deltas(gt_boxes, matched, positive, boxes, weights):
    """Regression targets onto the matched box where positive, 0 elsewhere (finite everywhere:
    non-positive rows encode a unit box onto itself instead of padding onto padding)."""
    unit = jnp.array([0.0, 0.0, 1.0, 1.0], boxes.dtype)
    # A one-hot product instead of gt_boxes[matched]: XLA:CPU fuses the whole matching into a
    # gather's index computation and runs it per output element (measured 4 ms against 1 ms for
    # 16k anchors); HIGHEST keeps the f32 coordinates exact where the default would use TF32.
    one_hot = jax.nn.one_hot(matched, gt_boxes.shape[0], dtype=gt_boxes.dtype)
    matched_boxes = jnp.matmul(one_hot, gt_boxes, precision=lax.Precision.HIGHEST)
    reference = jnp.where(positive[:, None], matched_boxes, unit)
    source = jnp.where(positive[:, None], boxes, unit)
    return jnp.where(positive[:, None], encode_boxes(reference, source, weights), 0.0)


def _usable_gt(gt_boxes, gt_valid):
    """Valid ground truth with a positive area (a box without area has no regression target)."""
    return (
        jnp.asarray(gt_valid, bool)
        & (gt_boxes[:, 2] > gt_boxes[:, 0])
        & (gt_boxes[:, 3] > gt_boxes[:, 1])
    )


class RPNTargets(NamedTuple):
    """Per-anchor RPN targets of one image (all ``[A]`` or ``[A, 4]``)."""

    objectness: jax.Array  # float32 1 for a positive anchor, 0 otherwise
    deltas: jax.Array  # float32 [A, 4] box deltas onto the matched box (0 where not positive)
    positive: jax.Array  # bool: sampled positive -> box regression and objectness loss
    negative: jax.Array  # bool: sampled negative -> objectness loss


def rpn_targets(
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
    """RPN targets of one image (torchvision RegionProposalNetwork): anchors ``[A, 4]``
    matched to padded ground truth ``gt_boxes[G, 4]`` / ``gt_valid[G]`` with low-quality matches
    allowed, then ``num_samples`` anchors sampled with ``positive_fraction`` positives.
    Ground-truth boxes without area count as padding.

    torchvision's losses: binary cross-entropy on ``positive | negative`` anchors and smooth-L1
    (beta 1/9) of the deltas on ``positive`` ones, both summed and divided by the number sampled.
    """
    anchors = jnp.asarray(anchors, jnp.float32)
    gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
    gt_valid = _usable_gt(gt_boxes, gt_valid)
    matched = match_gt_major(
        box_iou(gt_boxes, anchors), gt_valid, fg_iou_threshold, bg_iou_threshold, True
    )
    labels = jnp.where(matched >= 0, 1, jnp.where(matched == BELOW_LOW_THRESHOLD, 0, -1))
    positive, negative = sample_balanced(key, labels, num_samples, positive_fraction)
    deltas = _matched_deltas(gt_boxes, matched, matched >= 0, anchors, weights)
    return RPNTargets(
        objectness=(matched >= 0).astype(jnp.float32),
        deltas=lax.stop_gradient(deltas),
        positive=positive,
        negative=negative,
    )


class RoITargets(NamedTuple):
    """Sampled RoIs of one image and their box-head targets (all ``[num_samples, ...]``)."""

    rois: jax.Array  # float32 [S, 4] sampled proposals (ground-truth boxes included)
    labels: jax.Array  # int32 [S]: class of the matched box, 0 for background
    deltas: jax.Array  # float32 [S, 4] deltas onto the matched box (0 where not positive)
    positive: jax.Array  # bool [S]: foreground -> regression loss of its class's deltas
    valid: jax.Array  # bool [S]: a real sample -> classification loss (false for padding)
    index: jax.Array  # int32 [S]: row of concat(proposals, gt_boxes) each sample was taken from


def roi_targets(
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
    boxes without area count as padding.

    torchvision's losses: cross-entropy over ``valid`` samples, smooth-L1 (beta 1/9) of the
    deltas of class ``labels`` on ``positive`` samples, both divided by the number of samples.
    """
    proposals = jnp.asarray(proposals, jnp.float32)
    gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
    gt_valid = _usable_gt(gt_boxes, gt_valid)
    candidates = jnp.concatenate([proposals, gt_boxes], axis=0)
    candidate_valid = jnp.concatenate([jnp.asarray(proposal_valid, bool), gt_valid])
    matched = match(
        box_iou(candidates, gt_boxes), gt_valid, fg_iou_threshold, bg_iou_threshold, False
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
    deltas = _matched_deltas(gt_boxes, roi_matched, positive, rois, weights)
    return RoITargets(
        rois=lax.stop_gradient(rois),
        labels=classes,
        deltas=lax.stop_gradient(deltas),
        positive=positive,
        valid=valid,
        index=indices,
    )
