"""Faster R-CNN modules (Flax NNX): ResNet-style backbone, FPN, RPN head and box head.

Images are NHWC uint8 (or float in [0, 255]); features are NHWC. The model knows nothing about
files, anchors' sizes or losses: `billetjax.detector.train` and `.predict` wire it together with
the static-shape ops of `billetjax.detector.ops`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# ImageNet's RGB statistics; any fixed normalisation works for a model trained from scratch.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# torchvision's RPN box coder has unit weights (targets.rpn_targets encodes with them); the box
# head's coder uses ops' default (10, 10, 5, 5).
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the detector (config.yaml `detector.model`)."""

    num_classes: int = 10  # characters, without background
    stem_width: int = 32
    widths: tuple[int, ...] = (32, 64, 128)  # one stage per FPN level, strides 4, 8, 16, ...
    blocks: tuple[int, ...] = (1, 1, 1)  # residual blocks per stage
    fpn_width: int = 32
    head_width: int = 256  # the box head's two fully connected layers
    anchors_per_location: int = 3
    anchor_levels: int = 1  # the finest FPN levels that carry anchors (and the RPN head)
    pool_size: int = 7  # RoIAlign output size
    groups: int = 8  # GroupNorm groups (batch statistics are too noisy at our batch sizes)
    # "conv": two stride-2 3x3 convolutions; "space_to_depth": 4x4 pixel blocks to channels, then
    # one 3x3 convolution at stride 4 (no full-resolution feature maps: faster on CPU).
    stem: str = "conv"

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(4 * 2**i for i in range(len(self.widths)))

    @classmethod
    def from_dict(cls, d: dict[str, Any], num_classes: int, anchors_per_location: int) -> "ModelConfig":
        keys = {"stem_width", "widths", "blocks", "fpn_width", "head_width", "pool_size", "groups",
                "anchor_levels", "stem"}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in keys}
        return cls(num_classes=num_classes, anchors_per_location=anchors_per_location, **kw)


def _norm(width: int, groups: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
    return nnx.GroupNorm(width, num_groups=min(groups, width), rngs=rngs)


def _conv(cin: int, cout: int, k: int, stride: int, rngs: nnx.Rngs, bias: bool = False) -> nnx.Conv:
    return nnx.Conv(
        cin, cout, (k, k), strides=stride, padding="SAME", use_bias=bias,
        kernel_init=nnx.initializers.kaiming_normal(), rngs=rngs,
    )


class BasicBlock(nnx.Module):
    """ResNet basic block (two 3x3 convolutions), projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, cout, 3, stride, rngs)
        self.norm1 = _norm(cout, groups, rngs)
        self.conv2 = _conv(cout, cout, 3, 1, rngs)
        # Zero-initialised last scale: each block starts as the identity (Goyal et al. 2017).
        self.norm2 = nnx.GroupNorm(cout, num_groups=min(groups, cout),
                                   scale_init=nnx.initializers.zeros, rngs=rngs)
        if stride != 1 or cin != cout:
            self.proj = _conv(cin, cout, 1, stride, rngs)
            self.proj_norm = _norm(cout, groups, rngs)
        else:
            self.proj = None
            self.proj_norm = None

    def __call__(self, x):
        y = jax.nn.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        shortcut = x if self.proj is None else self.proj_norm(self.proj(x))
        return jax.nn.relu(y + shortcut)


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
    """NHWC `[B, H, W, C]` -> `[B, H/block, W/block, block*block*C]`: each block x block pixel
    tile becomes one position, its pixels in (row, column, channel) order along the channels."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // block, w // block, block * block * c)


class Backbone(nnx.Module):
    """ResNet-style backbone: a stride-4 stem, then one stage per output level (strides 4, 8, ...)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        if cfg.stem not in ("conv", "space_to_depth"):
            raise ValueError(f"detector.model.stem must be 'conv' or 'space_to_depth', got {cfg.stem!r}")
        self.space_to_depth = cfg.stem == "space_to_depth"
        if self.space_to_depth:
            self.stem = _conv(3 * 16, cfg.stem_width, 3, 1, rngs)
            self.stem_norm = _norm(cfg.stem_width, cfg.groups, rngs)
            self.stem2 = self.stem2_norm = None
        else:
            self.stem = _conv(3, cfg.stem_width, 3, 2, rngs)
            self.stem_norm = _norm(cfg.stem_width, cfg.groups, rngs)
            self.stem2 = _conv(cfg.stem_width, cfg.stem_width, 3, 2, rngs)
            self.stem2_norm = _norm(cfg.stem_width, cfg.groups, rngs)
        stages = []
        cin = cfg.stem_width
        for i, (width, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(cin, width, stride, cfg.groups, rngs))
                cin = width
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)

    def __call__(self, x) -> list[jax.Array]:
        if self.space_to_depth:
            x = jax.nn.relu(self.stem_norm(self.stem(space_to_depth(x, 4))))
        else:
            x = jax.nn.relu(self.stem_norm(self.stem(x)))
            x = jax.nn.relu(self.stem2_norm(self.stem2(x)))
        features = []
        for stage in self.stages:
            for block in stage:
                x = block(x)
            features.append(x)
        return features


def upsample2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling of NHWC by broadcast + reshape.

    Its gradient is a reshape + sum, which XLA:CPU runs far faster than the gradient of a
    transposed convolution or of `jax.image.resize`.
    """
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


class FPN(nnx.Module):
    """Feature pyramid (Lin et al. 2017): 1x1 laterals, nearest-neighbour top-down, 3x3 outputs."""

    def __init__(self, in_widths: tuple[int, ...], width: int, rngs: nnx.Rngs):
        self.laterals = nnx.List([_conv(c, width, 1, 1, rngs, bias=True) for c in in_widths])
        self.outputs = nnx.List([_conv(width, width, 3, 1, rngs, bias=True) for _ in in_widths])

    def __call__(self, features: list[jax.Array]) -> list[jax.Array]:
        top = self.laterals[-1](features[-1])
        merged = [top]
        for i in range(len(features) - 2, -1, -1):
            top = self.laterals[i](features[i]) + upsample2x(top)
            merged.insert(0, top)
        return [conv(m) for conv, m in zip(self.outputs, merged)]


class RPNHead(nnx.Module):
    """Shared 3x3 conv, then per-anchor objectness logits and box deltas at every level."""

    def __init__(self, width: int, anchors: int, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.01)
        self.conv = nnx.Conv(width, width, (3, 3), kernel_init=init, rngs=rngs)
        self.cls = nnx.Conv(width, anchors, (1, 1), kernel_init=init, rngs=rngs)
        self.box = nnx.Conv(width, 4 * anchors, (1, 1), kernel_init=init, rngs=rngs)

    def __call__(self, levels: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
        """Objectness `[B, N]` and deltas `[B, N, 4]`, N = sum over levels of H*W*A in the
        (level, y, x, anchor) order of `anchors.anchor_grid`."""
        logits, deltas = [], []
        for x in levels:
            t = jax.nn.relu(self.conv(x))
            b = x.shape[0]
            logits.append(self.cls(t).reshape(b, -1))
            deltas.append(self.box(t).reshape(b, -1, 4))
        return jnp.concatenate(logits, axis=1), jnp.concatenate(deltas, axis=1)


class BoxHead(nnx.Module):
    """Two fully connected layers on pooled RoIs, then class logits (background = 0) and
    class-specific box deltas `[K, num_classes + 1, 4]`."""

    def __init__(self, in_features: int, width: int, num_classes: int, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(in_features, width, rngs=rngs)
        self.fc2 = nnx.Linear(width, width, rngs=rngs)
        self.cls = nnx.Linear(width, num_classes + 1, kernel_init=nnx.initializers.normal(0.01),
                              rngs=rngs)
        self.box = nnx.Linear(width, 4 * (num_classes + 1),
                              kernel_init=nnx.initializers.normal(0.001), rngs=rngs)

    def __call__(self, pooled: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = pooled.reshape(pooled.shape[0], -1)
        x = jax.nn.relu(self.fc1(x))
        x = jax.nn.relu(self.fc2(x))
        return self.cls(x), self.box(x).reshape(x.shape[0], -1, 4)


class FasterRCNN(nnx.Module):
    """The trainable parts of the two-stage detector; proposals and losses are functions of its
    outputs (`billetjax.detector.train`)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.backbone = Backbone(cfg, rngs)
        self.fpn = FPN(cfg.widths, cfg.fpn_width, rngs)
        self.rpn = RPNHead(cfg.fpn_width, cfg.anchors_per_location, rngs)
        self.box_head = BoxHead(cfg.fpn_width * cfg.pool_size**2, cfg.head_width,
                                cfg.num_classes, rngs)

    def features(self, images: jax.Array) -> list[jax.Array]:
        """FPN levels (strides 4, 8, ...) of uint8/float RGB images `[B, H, W, 3]`."""
        x = (images.astype(jnp.float32) - jnp.asarray(PIXEL_MEAN)) / jnp.asarray(PIXEL_STD)
        return self.fpn(self.backbone(x))

    def __call__(self, images: jax.Array):
        levels = self.features(images)
        logits, deltas = self.rpn(levels[: self.cfg.anchor_levels])
        return levels, logits, deltas


# ----------------------------------------------------------------------------- detection logic
# Pure functions of the model's outputs, with static shapes, vmapped over the images of a batch.


def _proposals_one(logits, deltas, anchors, level_sizes, image_hw, pre_nms_top_n, post_nms_top_n,
                   nms_iou, min_size):
    """Proposals of one image: top-k per level, decode, clip, NMS per level -> fixed count."""
    from billetjax.detector import ops

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
                  post_nms_top_n: int, nms_iou: float = 0.7, min_size: float = 1e-3):
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
    level is the same rule without computing RoIAlign on every level.
    """
    from billetjax.detector import ops

    b, r = rois.shape[:2]
    batch_index = jnp.repeat(jnp.arange(b, dtype=jnp.int32), r)
    return ops.roi_align(levels[0], rois.reshape(b * r, 4), batch_index, pool_size,
                         spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=True)


def _detect_one(cls_logits, box_deltas, rois, roi_valid, image_hw, score_threshold, nms_iou,
                max_detections, pre_nms_top_n):
    from billetjax.detector import ops

    r, k1 = cls_logits.shape
    probs = jax.nn.softmax(cls_logits, axis=-1)
    boxes = ops.clip_boxes(ops.decode_boxes(box_deltas, rois[:, None, :]), *image_hw)  # [R, K+1, 4]
    scores = probs[:, 1:].reshape(-1)
    boxes = boxes[:, 1:].reshape(-1, 4)
    labels = jnp.tile(jnp.arange(1, k1, dtype=jnp.int32), r)
    roi_index = jnp.repeat(jnp.arange(r, dtype=jnp.int32), k1 - 1)
    wh = boxes[:, 2:] - boxes[:, :2]
    ok = (scores > score_threshold) & jnp.repeat(roi_valid, k1 - 1) & (wh[:, 0] >= 1e-2) & (wh[:, 1] >= 1e-2)
    # NMS only over the best candidates (a static count), as the loop costs one pass per kept box.
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
           nms_iou: float, max_detections: int, pre_nms_top_n: int = 1000):
    """Final detections per image (torchvision's RoIHeads.postprocess_detections, static shapes).

    `cls_logits[B, R, K+1]`, `box_deltas[B, R, K+1, 4]`, `rois[B, R, 4]`: per-class boxes and
    scores, score threshold, per-class NMS, at most `max_detections` per image. Returns arrays
    `[B, max_detections, ...]` with `valid` marking real detections; labels are 1..K.
    """
    fn = lambda c, d, r, v: _detect_one(c, d, r, v, tuple(image_hw), score_threshold, nms_iou,
                                        max_detections, pre_nms_top_n)
    return jax.vmap(fn)(cls_logits, box_deltas, rois, roi_valid)


# ----------------------------------------------------------------------------- the whole detector


@dataclass(frozen=True)
class DetectorSpec:
    """Everything but the weights that defines a trained detector: architecture, anchors, the
    static counts of its two stages, and the categories its labels 1..K stand for.

    It travels inside `params.msgpack` (as JSON), so prediction needs no config.
    """

    model: ModelConfig
    image_size_px: int
    category_ids: tuple[int, ...]
    anchor_sizes: tuple[tuple[float, ...], ...]  # per level, finest first
    aspect_ratios: tuple[float, ...]  # h / w
    rpn: dict = field(default_factory=dict)
    roi: dict = field(default_factory=dict)
    inference: dict = field(default_factory=dict)

    @property
    def feature_hws(self) -> tuple[tuple[int, int], ...]:
        """Sizes of the levels that carry anchors (the finest `model.anchor_levels`)."""
        strides = self.model.strides[: self.model.anchor_levels]
        return tuple((self.image_size_px // s, self.image_size_px // s) for s in strides)

    def anchors(self):
        """Anchors `float32[N, 4]` of all levels (torchvision's order) and each level's count."""
        import numpy as np

        from billetjax.detector.anchors import anchor_grid

        grids = [anchor_grid(hw, s, sizes, self.aspect_ratios)
                 for hw, s, sizes in zip(self.feature_hws, self.model.strides, self.anchor_sizes)]
        return np.concatenate(grids).astype(np.float32), tuple(len(g) for g in grids)

    def to_json(self) -> str:
        import dataclasses
        import json

        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DetectorSpec":
        import json

        d = json.loads(text)
        model = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("model").items()})
        return cls(
            model=model,
            image_size_px=d["image_size_px"],
            category_ids=tuple(d["category_ids"]),
            anchor_sizes=tuple(tuple(s) for s in d["anchor_sizes"]),
            aspect_ratios=tuple(d["aspect_ratios"]),
            rpn=d["rpn"], roi=d["roi"], inference=d["inference"],
        )


def inference(model: FasterRCNN, spec: DetectorSpec, images: jax.Array, anchors: jax.Array,
              level_sizes: tuple[int, ...]) -> dict[str, jax.Array]:
    """Detections of a batch of images `[B, H, W, 3]` (arrays `[B, max_detections, ...]`)."""
    hw = (spec.image_size_px, spec.image_size_px)
    levels, logits, deltas = model(images)
    rois, roi_valid = rpn_proposals(
        logits, deltas, anchors, level_sizes, hw, spec.rpn["pre_nms_top_n_test"],
        spec.rpn["post_nms_top_n_test"], spec.rpn["nms_iou"])
    pooled = pool_rois(levels, rois, spec.model.pool_size, spec.roi["sampling_ratio"])
    cls_logits, box_deltas = model.box_head(pooled)
    b, r = rois.shape[:2]
    inf = spec.inference
    return detect(cls_logits.reshape(b, r, -1), box_deltas.reshape(b, r, -1, 4), rois, roi_valid,
                  hw, inf["score_threshold"], inf["nms_iou"], inf["max_detections"])
