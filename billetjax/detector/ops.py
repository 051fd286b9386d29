"""Detection ops with torchvision's semantics and static shapes.

The primitives both stages share: IoU, NMS, RoIAlign, the box coder (``encode_boxes``,
``decode_boxes``) and the smooth-L1 of box regression. Boxes are ``[x1, y1, x2, y2]`` in pixels.
Every function here is ``jax.jit``-able with shapes fixed by its arguments (``max_output``,
``output_size``, ``sampling_ratio`` must be static Python values) and has no Python loop over
boxes, so it also runs under ``jax.vmap`` over images.
Tests compare each op with torchvision (``tests/test_detector_ops.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

# torchvision.models.detection._utils.BoxCoder: the largest log-scale change a decoded box may get,
# so that exp() cannot overflow on an untrained regressor.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)
# torchvision's smooth-L1 transition point for both stages' box regression.
SMOOTH_L1_BETA = 1.0 / 9


def box_area(boxes: jax.Array) -> jax.Array:
    """Area ``(x2 - x1) * (y2 - y1)`` of boxes ``[..., 4]`` (torchvision.ops.box_area)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou_with_areas(a, area_a, b, area_b):
    """IoU of broadcastable box arrays with precomputed areas (same arithmetic as torchvision)."""
    lt_x = jnp.maximum(a[..., 0], b[..., 0])
    lt_y = jnp.maximum(a[..., 1], b[..., 1])
    rb_x = jnp.minimum(a[..., 2], b[..., 2])
    rb_y = jnp.minimum(a[..., 3], b[..., 3])
    inter = jnp.maximum(rb_x - lt_x, 0) * jnp.maximum(rb_y - lt_y, 0)
    union = area_a + area_b - inter
    # torchvision gives 0/0 = nan for two degenerate boxes; 0 keeps max/argmax and losses finite
    # and changes no NMS decision (nan > threshold is false there as well).
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0)


def box_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pairwise IoU ``[N, M]`` of boxes ``a[N, 4]`` and ``b[M, 4]`` (torchvision.ops.box_iou).

    One deliberate difference: where both boxes have zero area (union 0) torchvision returns nan,
    this returns 0.
    """
    return _iou_with_areas(a[:, None, :], box_area(a)[:, None], b[None, :, :], box_area(b)[None, :])


def _greedy_nms(boxes, scores, idxs, valid, iou_threshold, max_output):
    """Greedy NMS in decreasing score order; boxes only suppress boxes with the same ``idxs``."""
    n = boxes.shape[0]
    if n == 0 or max_output == 0:
        return jnp.full((max_output,), -1, jnp.int32)
    # Stable sort on the negated score: ties keep the input order, as torchvision's CPU kernel.
    order = jnp.argsort(-scores, stable=True).astype(jnp.int32)
    sorted_boxes = boxes[order]
    sorted_areas = box_area(sorted_boxes)
    sorted_idxs = idxs[order]
    remaining = jnp.ones((n,), bool) if valid is None else valid[order].astype(bool)
    keep = jnp.full((max_output,), -1, jnp.int32)

    # One iteration per kept box (at most max_output), each O(N): no N x N matrix is built, and
    # the loop stops as soon as nothing is left to keep.
    def cond(state):
        count, remaining, _ = state
        return (count < max_output) & jnp.any(remaining)

    def body(state):
        count, remaining, keep = state
        i = jnp.argmax(remaining)  # the highest-scoring box not yet kept or suppressed
        iou = _iou_with_areas(sorted_boxes[i], sorted_areas[i], sorted_boxes, sorted_areas)
        suppress = (iou > iou_threshold) & (sorted_idxs == sorted_idxs[i])
        remaining = remaining & ~suppress
        remaining = remaining.at[i].set(False)
        keep = keep.at[count].set(order[i])
        return count + 1, remaining, keep

    _, _, keep = lax.while_loop(cond, body, (jnp.int32(0), remaining, keep))
    return keep


def nms(
    boxes: jax.Array,
    scores: jax.Array,
    iou_threshold: float,
    max_output: int,
    valid: jax.Array | None = None,
) -> jax.Array:
    """Non-maximum suppression (torchvision.ops.nms) returning ``int32[max_output]`` indices.

    The kept indices are in decreasing score order (ties: lower index first, as torchvision),
    truncated to ``max_output`` and padded with -1. A box is suppressed by a kept box when their IoU
    is ``> iou_threshold``. ``valid`` (bool ``[N]``, optional) leaves padded boxes out entirely.
    """
    boxes = jnp.asarray(boxes)
    idxs = jnp.zeros((boxes.shape[0],), jnp.int32)
    return _greedy_nms(boxes, jnp.asarray(scores), idxs, valid, iou_threshold, int(max_output))


def batched_nms(
    boxes: jax.Array,
    scores: jax.Array,
    idxs: jax.Array,
    iou_threshold: float,
    max_output: int,
    valid: jax.Array | None = None,
) -> jax.Array:
    """Per-category NMS (torchvision.ops.batched_nms): boxes with different ``idxs`` never suppress
    each other. Returns ``int32[max_output]`` indices in decreasing score order, padded with -1.

    Instead of torchvision's coordinate offset (which rounds coordinates in float32 once offsets
    are large) the IoU is masked by category, i.e. exactly torchvision's per-class semantics.
    Equal scores keep the input order, also across categories (torchvision's per-class path,
    taken for more than 1000 boxes on CPU, may order such ties differently).
    """
    boxes = jnp.asarray(boxes)
    return _greedy_nms(
        boxes, jnp.asarray(scores), jnp.asarray(idxs), valid, iou_threshold, int(max_output)
    )


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    oh, ow = size
    return int(oh), int(ow)


def _bilinear_axis(coords, size):
    """torchvision's 1-D bilinear rule: indices ``[..., 2]`` and weights ``[..., 2]``.

    Samples beyond ``-1`` or ``size`` contribute zero; otherwise the coordinate is clamped to
    ``[0, size - 1]`` and split between its two neighbouring cells.
    """
    inside = (coords >= -1.0) & (coords <= size)
    c = jnp.maximum(coords, 0.0)
    low = jnp.floor(c).astype(jnp.int32)  # c >= 0, so floor == C's (int) truncation
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    c = jnp.where(at_edge, low.astype(c.dtype), c)
    frac = c - low
    weights = jnp.stack([1.0 - frac, frac], axis=-1) * inside[..., None]
    return jnp.stack([low, high], axis=-1), weights


def _check_sampling_ratio(sampling_ratio) -> int:
    sampling_ratio = int(sampling_ratio)
    if sampling_ratio <= 0:
        raise ValueError(
            f"roi_align: sampling_ratio={sampling_ratio} asks for torchvision's adaptive sampling "
            "(a different number of samples per box), which needs dynamic shapes; pass a fixed "
            "sampling_ratio > 0 (2 is the usual choice)."
        )
    return sampling_ratio


def _roi_align_table(table, base, height, width, scale, boxes, output_size, ratio, aligned):
    """RoIAlign over a flat feature table ``[rows, C]``; per box: ``base`` (row of its map's
    pixel (0, 0)), map ``height``/``width`` and ``scale`` (all ``[K]``)."""
    oh, ow = output_size
    dtype = jnp.promote_types(table.dtype, jnp.float32)
    boxes = lax.stop_gradient(jnp.asarray(boxes)).astype(dtype)
    scale = jnp.asarray(scale, dtype)
    offset = 0.5 if aligned else 0.0
    x1 = boxes[:, 0] * scale - offset
    y1 = boxes[:, 1] * scale - offset
    roi_w = boxes[:, 2] * scale - offset - x1
    roi_h = boxes[:, 3] * scale - offset - y1
    if not aligned:
        roi_w = jnp.maximum(roi_w, 1.0)
        roi_h = jnp.maximum(roi_h, 1.0)
    bin_w = roi_w / ow
    bin_h = roi_h / oh

    # Sample positions per axis, in torchvision's order of operations:
    # bin p, sample s -> start + p * bin + (s + 0.5) * bin / ratio.
    sample = (jnp.arange(ratio, dtype=dtype) + 0.5)[None, None, :]
    ys = (
        y1[:, None, None]
        + jnp.arange(oh, dtype=dtype)[None, :, None] * bin_h[:, None, None]
        + sample * bin_h[:, None, None] / ratio
    )  # [K, oh, r]
    xs = (
        x1[:, None, None]
        + jnp.arange(ow, dtype=dtype)[None, :, None] * bin_w[:, None, None]
        + sample * bin_w[:, None, None] / ratio
    )  # [K, ow, r]
    y_idx, y_w = _bilinear_axis(ys, height[:, None, None])  # [K, oh, r, 2]
    x_idx, x_w = _bilinear_axis(xs, width[:, None, None])  # [K, ow, r, 2]
    # The bilinear weights and the bin average are separable in y and x.
    y_idx = y_idx.reshape(-1, oh, 2 * ratio)
    x_idx = x_idx.reshape(-1, ow, 2 * ratio)
    y_w = y_w.reshape(-1, oh, 2 * ratio) / ratio
    x_w = x_w.reshape(-1, ow, 2 * ratio) / ratio

    rows = base[:, None, None] + y_idx * width[:, None, None]  # [K, oh, 2r]
    index = rows[:, :, None, :, None] + x_idx[:, None, :, None, :]  # [K, oh, ow, 2r, 2r]
    weights = y_w[:, :, None, :, None] * x_w[:, None, :, None, :]
    num_boxes = index.shape[0]
    return _weighted_gather_sum(
        table,
        index.reshape(num_boxes, oh, ow, 4 * ratio * ratio),
        weights.reshape(num_boxes, oh, ow, 4 * ratio * ratio).astype(table.dtype),
    )


# RoIAlign's inner product: out[..., :] = sum_j weights[..., j] * table[index[..., j], :].
# Forward: one gather per j, summed, which XLA fuses into a single loop without materialising
# the [K, oh, ow, 4 r^2, C] corner pixels (K=512, C=128, 7x7, r=2 on 2 CPU cores: ~3 ms against
# ~60 ms for one big gather + einsum, and against torchvision's ~30 ms). Backward: one scatter-add
# of all contributions; JAX's own transpose (one scatter per j, chained) measured 1.3-1.5x slower.
# Per-box interpolation matrices with einsum were slower still on maps above ~16x16 cells and
# cannot mix pyramid levels in one call.


def _weighted_gather_sum_impl(table, index, weights):
    out = None
    for j in range(index.shape[-1]):
        term = weights[..., j, None] * jnp.take(table, index[..., j], axis=0, mode="clip")
        out = term if out is None else out + term
    return out


@jax.custom_vjp
def _weighted_gather_sum(table, index, weights):
    return _weighted_gather_sum_impl(table, index, weights)


def _weighted_gather_sum_fwd(table, index, weights):
    return _weighted_gather_sum_impl(table, index, weights), (index, weights, table.shape[0])


def _weighted_gather_sum_bwd(residuals, cotangent):
    index, weights, num_rows = residuals
    channels = cotangent.shape[-1]
    contributions = (weights[..., None] * cotangent[..., None, :]).reshape(-1, channels)
    d_table = jnp.zeros((num_rows, channels), cotangent.dtype)
    d_table = d_table.at[index.reshape(-1)].add(contributions, mode="clip")
    # Boxes (hence index and weights) are constants of RoIAlign, as in torchvision.
    return d_table, None, None


_weighted_gather_sum.defvjp(_weighted_gather_sum_fwd, _weighted_gather_sum_bwd)


def roi_align(
    features: jax.Array,
    boxes: jax.Array,
    batch_index: jax.Array,
    output_size: int | Sequence[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool = True,
) -> jax.Array:
    """RoIAlign (torchvision.ops.roi_align) on NHWC features: ``[K, oh, ow, C]``.

    ``features[B, H, W, C]``, ``boxes[K, 4]`` in image pixels (scaled by ``spatial_scale``),
    ``batch_index[K]`` the image of each box. Each output bin averages ``sampling_ratio**2``
    bilinear samples with torchvision's border rules; ``aligned=True`` shifts by -0.5 px (pixel
    centres), ``aligned=False`` is the legacy rule with boxes at least 1 px wide.
    Gradients flow to ``features`` only (as torchvision; boxes are treated as constants);
    reverse mode only (``jax.grad``/``jax.vjp``, not ``jax.jvp``).

    torchvision's adaptive ``sampling_ratio <= 0`` (``ceil(roi_size / output_size)`` samples,
    different per box) needs dynamic shapes and is refused.
    """
    ratio = _check_sampling_ratio(sampling_ratio)
    num_images, height, width, channels = features.shape
    num_boxes = jnp.shape(boxes)[0]
    table = features.reshape(num_images * height * width, channels)
    base = jnp.asarray(batch_index, jnp.int32) * (height * width)
    full = lambda v: jnp.full((num_boxes,), v, jnp.int32)  # noqa: E731
    return _roi_align_table(
        table, base, full(height), full(width), spatial_scale, boxes,
        _pair(output_size), ratio, aligned,
    )  # fmt: skip


def fpn_levels(
    boxes: jax.Array,
    k_min: int,
    k_max: int,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> jax.Array:
    """FPN level of each box ``[K]`` as an index ``0 .. k_max - k_min`` (torchvision's LevelMapper,
    Lin et al. 2017 eq. 1): ``floor(k0 + log2(sqrt(area) / s0) + eps)`` clamped to the levels.

    With digits of 10–60 px, ``canonical_scale`` 224 sends every box to the finest level; pass a
    smaller canonical scale (e.g. the median digit size) to spread them.
    """
    size = jnp.sqrt(box_area(boxes))
    level = jnp.floor(canonical_level + jnp.log2(size / canonical_scale) + eps)
    return (jnp.clip(level, k_min, k_max) - k_min).astype(jnp.int32)


def multiscale_roi_align(
    features: Sequence[jax.Array],
    boxes: jax.Array,
    batch_index: jax.Array,
    levels: jax.Array,
    output_size: int | Sequence[int],
    spatial_scales: Sequence[float],
    sampling_ratio: int,
    aligned: bool = True,
) -> jax.Array:
    """RoIAlign of each box on its own pyramid level: ``[K, oh, ow, C]``.

    ``features`` is a list of ``[B, H_l, W_l, C]`` maps, ``spatial_scales`` their scales
    (1 / stride), ``levels[K]`` the index into that list (e.g. from :func:`fpn_levels`). Equal to
    ``roi_align(features[levels[k]], ..., spatial_scales[levels[k]])`` box by box (torchvision's
    MultiScaleRoIAlign, which uses ``aligned=False``), but costs one gather over all levels, not
    one ``roi_align`` per level.
    """
    ratio = _check_sampling_ratio(sampling_ratio)
    if len(features) != len(spatial_scales):
        raise ValueError(
            f"multiscale_roi_align: {len(features)} feature maps but {len(spatial_scales)} scales"
        )
    num_images, channels = features[0].shape[0], features[0].shape[-1]
    starts, heights, widths, tables = [], [], [], []
    offset = 0
    for f in features:
        _, h, w, _ = f.shape
        starts.append(offset)
        heights.append(h)
        widths.append(w)
        tables.append(f.reshape(num_images * h * w, channels))
        offset += num_images * h * w
    levels = jnp.asarray(levels, jnp.int32)
    height = jnp.asarray(heights, jnp.int32)[levels]
    width = jnp.asarray(widths, jnp.int32)[levels]
    scale = jnp.asarray(spatial_scales, jnp.promote_types(features[0].dtype, jnp.float32))[levels]
    base = (
        jnp.asarray(starts, jnp.int32)[levels]
        + jnp.asarray(batch_index, jnp.int32) * height * width
    )
    return _roi_align_table(
        jnp.concatenate(tables, axis=0), base, height, width, scale, boxes,
        _pair(output_size), ratio, aligned,
    )  # fmt: skip


def encode_boxes(
    reference_boxes: jax.Array,
    proposals: jax.Array,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
) -> jax.Array:
    """Regression targets ``[..., 4]`` (dx, dy, dw, dh) that move ``proposals`` onto
    ``reference_boxes`` (torchvision BoxCoder.encode_single)."""
    wx, wy, ww, wh = weights
    ex_w = proposals[..., 2] - proposals[..., 0]
    ex_h = proposals[..., 3] - proposals[..., 1]
    ex_cx = proposals[..., 0] + 0.5 * ex_w
    ex_cy = proposals[..., 1] + 0.5 * ex_h
    gt_w = reference_boxes[..., 2] - reference_boxes[..., 0]
    gt_h = reference_boxes[..., 3] - reference_boxes[..., 1]
    gt_cx = reference_boxes[..., 0] + 0.5 * gt_w
    gt_cy = reference_boxes[..., 1] + 0.5 * gt_h
    return jnp.stack(
        [
            wx * (gt_cx - ex_cx) / ex_w,
            wy * (gt_cy - ex_cy) / ex_h,
            ww * jnp.log(gt_w / ex_w),
            wh * jnp.log(gt_h / ex_h),
        ],
        axis=-1,
    )


def decode_boxes(
    deltas: jax.Array,
    boxes: jax.Array,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
) -> jax.Array:
    """Apply ``deltas[..., 4]`` to ``boxes[..., 4]`` (broadcasting; torchvision
    BoxCoder.decode_single, dw/dh clipped at log(1000/16)).

    Class-specific deltas ``[N, K, 4]`` decode against ``boxes[:, None, :]``.
    """
    wx, wy, ww, wh = weights
    boxes = boxes.astype(deltas.dtype)
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    ctr_x = boxes[..., 0] + 0.5 * widths
    ctr_y = boxes[..., 1] + 0.5 * heights
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, BBOX_XFORM_CLIP)
    dh = jnp.minimum(deltas[..., 3] / wh, BBOX_XFORM_CLIP)
    pred_cx = dx * widths + ctr_x
    pred_cy = dy * heights + ctr_y
    half_w = 0.5 * (jnp.exp(dw) * widths)
    half_h = 0.5 * (jnp.exp(dh) * heights)
    return jnp.stack(
        [pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h], axis=-1
    )


def clip_boxes(boxes: jax.Array, height, width) -> jax.Array:
    """Clip boxes ``[..., 4]`` to the image ``[0, width] x [0, height]``
    (torchvision.ops.clip_boxes_to_image)."""
    x = jnp.clip(boxes[..., 0::2], 0, width)
    y = jnp.clip(boxes[..., 1::2], 0, height)
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def smooth_l1(x: jax.Array, beta: float = SMOOTH_L1_BETA) -> jax.Array:
    """Smooth-L1 (Huber / beta) of the regression errors ``x``, per element
    (torch.nn.functional.smooth_l1_loss with ``reduction="none"``); both stages' box loss."""
    ax = jnp.abs(x)
    return jnp.where(ax < beta, 0.5 * ax**2 / beta, ax - 0.5 * beta)
