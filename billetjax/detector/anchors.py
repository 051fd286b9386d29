"""Anchors in torchvision's AnchorGenerator layout, sized from the training boxes.

Digits on billets are 10–60 px tall at the default image size and taller than wide, so COCO's
32–512 px square-ish anchors would miss them; :func:`anchor_sizes_from_boxes` derives sizes and
aspect ratios (h / w, torchvision's convention) from the training annotations instead.
Everything here is NumPy: anchors are constants of a model's shape, computed once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def base_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
    """Anchors ``float32[A, 4]`` centred on (0, 0), A = ratios x sizes with ratios outer, rounded
    to whole pixels (torchvision AnchorGenerator.generate_anchors, float32 arithmetic)."""
    scales = np.asarray(sizes, np.float32)
    ratios = np.asarray(aspect_ratios, np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)).astype(np.float32)


def _height_width(value) -> tuple[int, int]:
    if np.ndim(value) == 0:
        return int(value), int(value)
    a, b = value
    return int(a), int(b)


def anchor_grid(
    feature_hw: Sequence[int],
    stride: int | Sequence[int],
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
) -> np.ndarray:
    """Anchors ``float32[H * W * A, 4]`` of one feature map: position-major (row by row), the A
    anchors of :func:`base_anchors` per position, centred on ``(x * stride_w, y * stride_h)``
    (torchvision AnchorGenerator.grid_anchors)."""
    height, width = _height_width(feature_hw)
    stride_h, stride_w = _height_width(stride)
    shift_y, shift_x = np.meshgrid(
        np.arange(height, dtype=np.int64) * stride_h,
        np.arange(width, dtype=np.int64) * stride_w,
        indexing="ij",
    )
    shift_x = shift_x.reshape(-1).astype(np.float32)
    shift_y = shift_y.reshape(-1).astype(np.float32)
    shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=1)
    base = base_anchors(sizes, aspect_ratios)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


def pyramid_anchors(
    feature_hws: Sequence[Sequence[int]],
    strides: Sequence[int | Sequence[int]],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float] | Sequence[Sequence[float]],
) -> np.ndarray:
    """Anchors of all pyramid levels concatenated, finest first, as torchvision's
    AnchorGenerator returns them for one image. ``sizes[l]`` are level l's sizes;
    ``aspect_ratios`` is one list for every level or one list per level."""
    if len(feature_hws) != len(strides) or len(strides) != len(sizes):
        raise ValueError(
            f"pyramid_anchors: {len(feature_hws)} feature maps, {len(strides)} strides and "
            f"{len(sizes)} size lists; give one of each per level"
        )
    if len(aspect_ratios) and np.ndim(aspect_ratios[0]) == 0:
        aspect_ratios = [aspect_ratios] * len(sizes)
    return np.concatenate(
        [
            anchor_grid(hw, s, sz, ar)
            for hw, s, sz, ar in zip(feature_hws, strides, sizes, aspect_ratios, strict=True)
        ]
    )


def _iou_same_centre_offset(box_wh, anchor_wh, dx, dy):
    """IoU of a box and an anchor whose centres differ by (dx, dy); arrays broadcast."""
    bw, bh = box_wh[..., 0], box_wh[..., 1]
    aw, ah = anchor_wh[..., 0], anchor_wh[..., 1]
    iw = np.clip(np.minimum(bw / 2, dx + aw / 2) - np.maximum(-bw / 2, dx - aw / 2), 0, None)
    ih = np.clip(np.minimum(bh / 2, dy + ah / 2) - np.maximum(-bh / 2, dy - ah / 2), 0, None)
    inter = iw * ih
    union = bw * bh + aw * ah - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def best_anchor_iou(
    boxes_xywh: np.ndarray,
    strides: Sequence[int],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float],
) -> np.ndarray:
    """Best IoU ``[N]`` of each box ``[x, y, w, h]`` with any anchor of the pyramid: how well the
    anchors cover the boxes (a box the RPN can only match below 0.7 IoU relies on the
    low-quality-match rule). Anchor centres lie on the grid ``(i * stride, j * stride)``."""
    boxes = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    centre = boxes[:, :2] + boxes[:, 2:] / 2
    best = np.zeros(len(boxes))
    for stride, level_sizes in zip(strides, sizes, strict=True):
        base = base_anchors(level_sizes, aspect_ratios).astype(np.float64)
        anchor_wh = base[:, 2:] - base[:, :2]  # [A, 2]
        anchor_centre = (base[:, :2] + base[:, 2:]) / 2  # rounding can move it by 0.5 px
        # The nearest anchor of each shape sits on one of the 4 grid points around the box centre.
        target = (centre[:, None, :] - anchor_centre[None]) / stride  # [N, A, 2] in grid units
        for fx in (np.floor, np.ceil):
            for fy in (np.floor, np.ceil):
                grid = np.stack([fx(target[..., 0]), fy(target[..., 1])], -1) * stride
                offset = grid + anchor_centre[None] - centre[:, None, :]  # [N, A, 2]
                iou = _iou_same_centre_offset(
                    boxes[:, None, 2:], anchor_wh[None], offset[..., 0], offset[..., 1]
                )
                best = np.maximum(best, iou.max(axis=1))
    return best


def anchor_sizes_from_boxes(
    boxes_xywh: np.ndarray,
    num_levels: int,
    *,
    sizes_per_level: int,
    num_aspect_ratios: int,
    size_quantiles: tuple[float, float],
    ratio_quantiles: tuple[float, float] = (0.1, 0.9),
    strides: Sequence[int] | None = None,
) -> tuple[tuple[tuple[float, ...], ...], tuple[float, ...], str]:
    """Anchor sizes per level and aspect ratios (h / w) from training boxes ``[N, 4]`` COCO
    ``[x, y, w, h]``; returns ``(sizes, aspect_ratios, summary)`` with a summary for the log.

    The ``num_levels * sizes_per_level`` sizes are spaced geometrically between the
    ``size_quantiles`` of sqrt(w * h), smallest on the finest level; the aspect ratios are
    quantiles of h / w evenly spaced over ``ratio_quantiles``. With ``strides`` the summary also
    reports how well the resulting anchors cover the boxes (best-anchor IoU).
    """
    boxes = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    w, h = boxes[:, 2], boxes[:, 3]
    usable = (w > 0) & (h > 0) & np.isfinite(w) & np.isfinite(h)
    if not usable.any():
        raise ValueError(
            f"anchor_sizes_from_boxes: none of the {len(boxes)} training boxes has a positive "
            "width and height; check the training annotations' bbox fields ([x, y, w, h])"
        )
    if num_levels < 1 or sizes_per_level < 1 or num_aspect_ratios < 1:
        raise ValueError(
            "anchor_sizes_from_boxes: num_levels, sizes_per_level and num_aspect_ratios "
            "must be >= 1"
        )
    w, h = w[usable], h[usable]
    scale = np.sqrt(w * h)
    ratio = h / w
    count = num_levels * sizes_per_level
    lo, hi = np.quantile(scale, size_quantiles)
    all_sizes = np.geomspace(lo, hi, count) if count > 1 else np.array([np.median(scale)])
    all_sizes = np.round(all_sizes, 1)
    sizes = tuple(
        tuple(float(s) for s in all_sizes[level * sizes_per_level : (level + 1) * sizes_per_level])
        for level in range(num_levels)
    )
    if num_aspect_ratios > 1:
        ratio_q = np.linspace(ratio_quantiles[0], ratio_quantiles[1], num_aspect_ratios)
    else:
        ratio_q = np.array([0.5])
    aspect_ratios = tuple(float(r) for r in np.round(np.quantile(ratio, ratio_q), 2))

    q = np.quantile(scale, [0.0, 0.02, 0.5, 0.98, 1.0])
    qh = np.quantile(h, [0.02, 0.5, 0.98])
    qr = np.quantile(ratio, [0.02, 0.1, 0.5, 0.9, 0.98])
    lines = [
        f"anchors from {usable.sum()} training boxes ({(~usable).sum()} without area skipped)",
        "  sqrt(w*h) px: min {:.1f}, q2 {:.1f}, median {:.1f}, q98 {:.1f}, max {:.1f}".format(*q),
        "  height px: q2 {:.1f}, median {:.1f}, q98 {:.1f}".format(*qh),
        "  h/w: q2 {:.2f}, q10 {:.2f}, median {:.2f}, q90 {:.2f}, q98 {:.2f}".format(*qr),
        f"  anchor sizes per level (finest first): {list(map(list, sizes))}",
        f"  aspect ratios (h/w): {list(aspect_ratios)}",
    ]
    if strides is not None:
        best = best_anchor_iou(boxes[usable], strides, sizes, aspect_ratios)
        lines.append(
            f"  coverage with strides {list(strides)}: best-anchor IoU median "
            f"{np.median(best):.2f}, >= 0.7 for {100 * np.mean(best >= 0.7):.1f} %, "
            f">= 0.5 for {100 * np.mean(best >= 0.5):.1f} %"
        )
    return sizes, aspect_ratios, "\n".join(lines)
