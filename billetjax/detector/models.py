"""Faster R-CNN modules (Flax NNX): ResNet-style backbone, FPN, RPN head and box head.

Modules only. Images are NHWC uint8 (or float in [0, 255]); features are NHWC. The model knows
nothing about files, anchors' sizes or losses: `postprocess` turns its outputs into proposals and
detections, `losses` into the training losses.

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

from billetjax.config import BOTTLENECK_EXPANSION
from billetjax.detector.spec import ModelConfig

# ImageNet's RGB statistics; any fixed normalisation works for a model trained from scratch.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


# `ModelConfig.precision` -> the dtype the layers compute in (parameters stay float32).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(precision: str):
    """The compute dtype of a `precision` name; an unknown name is refused."""
    if precision not in COMPUTE_DTYPES:
        raise ValueError(f"detector.precision must be one of {sorted(COMPUTE_DTYPES)}, got {precision!r}")
    return COMPUTE_DTYPES[precision]


def _norm(width: int, groups: int, rngs: nnx.Rngs, dtype, zero_scale: bool = False) -> nnx.GroupNorm:
    # Zero-initialised scale on a block's last norm: each block starts as the identity (Goyal
    # et al. 2017).
    init = {"scale_init": nnx.initializers.zeros} if zero_scale else {}
    return nnx.GroupNorm(width, num_groups=min(groups, width), dtype=dtype, rngs=rngs, **init)


def _conv(cin: int, cout: int, k: int, stride: int, rngs: nnx.Rngs, dtype, bias: bool = False) -> nnx.Conv:
    return nnx.Conv(
        cin, cout, (k, k), strides=stride, padding="SAME", use_bias=bias,
        kernel_init=nnx.initializers.kaiming_normal(), dtype=dtype, rngs=rngs,
    )


def _shortcut(cin: int, cout: int, stride: int, groups: int, rngs: nnx.Rngs, dtype):
    """A residual block's projection shortcut (1x1 convolution + norm) when the block changes the
    shape, else (None, None): the identity."""
    if stride == 1 and cin == cout:
        return None, None
    return _conv(cin, cout, 1, stride, rngs, dtype), _norm(cout, groups, rngs, dtype)


class BasicBlock(nnx.Module):
    """ResNet basic block (two 3x3 convolutions), projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, rngs: nnx.Rngs, dtype):
        self.conv1 = _conv(cin, cout, 3, stride, rngs, dtype)
        self.norm1 = _norm(cout, groups, rngs, dtype)
        self.conv2 = _conv(cout, cout, 3, 1, rngs, dtype)
        self.norm2 = _norm(cout, groups, rngs, dtype, zero_scale=True)
        self.proj, self.proj_norm = _shortcut(cin, cout, stride, groups, rngs, dtype)

    def __call__(self, x):
        y = jax.nn.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        shortcut = x if self.proj is None else self.proj_norm(self.proj(x))
        return jax.nn.relu(y + shortcut)


class BottleneckBlock(nnx.Module):
    """ResNet bottleneck block (He et al. 2016; torchvision's ResNet-50 layout, "v1.5"): 1x1
    convolution down to `cout / BOTTLENECK_EXPANSION` channels, 3x3 convolution carrying the
    stride, 1x1 convolution up to `cout`; projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, rngs: nnx.Rngs, dtype):
        mid = cout // BOTTLENECK_EXPANSION
        self.conv1 = _conv(cin, mid, 1, 1, rngs, dtype)
        self.norm1 = _norm(mid, groups, rngs, dtype)
        self.conv2 = _conv(mid, mid, 3, stride, rngs, dtype)
        self.norm2 = _norm(mid, groups, rngs, dtype)
        self.conv3 = _conv(mid, cout, 1, 1, rngs, dtype)
        self.norm3 = _norm(cout, groups, rngs, dtype, zero_scale=True)
        self.proj, self.proj_norm = _shortcut(cin, cout, stride, groups, rngs, dtype)

    def __call__(self, x):
        y = jax.nn.relu(self.norm1(self.conv1(x)))
        y = jax.nn.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        shortcut = x if self.proj is None else self.proj_norm(self.proj(x))
        return jax.nn.relu(y + shortcut)


BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


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
        if cfg.block not in BLOCKS:
            raise ValueError(f"detector.model.block must be one of {sorted(BLOCKS)}, got {cfg.block!r}")
        block_type = BLOCKS[cfg.block]
        dtype = compute_dtype(cfg.precision)
        self.space_to_depth = cfg.stem == "space_to_depth"
        if self.space_to_depth:
            self.stem = _conv(3 * 16, cfg.stem_width, 3, 1, rngs, dtype)
            self.stem_norm = _norm(cfg.stem_width, cfg.groups, rngs, dtype)
            self.stem2 = self.stem2_norm = None
        else:
            self.stem = _conv(3, cfg.stem_width, 3, 2, rngs, dtype)
            self.stem_norm = _norm(cfg.stem_width, cfg.groups, rngs, dtype)
            self.stem2 = _conv(cfg.stem_width, cfg.stem_width, 3, 2, rngs, dtype)
            self.stem2_norm = _norm(cfg.stem_width, cfg.groups, rngs, dtype)
        stages = []
        cin = cfg.stem_width
        for i, (width, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block_type(cin, width, stride, cfg.groups, rngs, dtype))
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

    def __init__(self, in_widths: tuple[int, ...], width: int, rngs: nnx.Rngs, dtype):
        self.laterals = nnx.List([_conv(c, width, 1, 1, rngs, dtype, bias=True) for c in in_widths])
        self.outputs = nnx.List([_conv(width, width, 3, 1, rngs, dtype, bias=True) for _ in in_widths])

    def __call__(self, features: list[jax.Array]) -> list[jax.Array]:
        top = self.laterals[-1](features[-1])
        merged = [top]
        for i in range(len(features) - 2, -1, -1):
            top = self.laterals[i](features[i]) + upsample2x(top)
            merged.insert(0, top)
        return [conv(m) for conv, m in zip(self.outputs, merged)]


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

    def __call__(self, pooled: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = pooled.reshape(pooled.shape[0], -1)
        x = jax.nn.relu(self.fc1(x))
        x = jax.nn.relu(self.fc2(x))
        return (self.cls(x).astype(jnp.float32),
                self.box(x).reshape(x.shape[0], -1, 4).astype(jnp.float32))


class FasterRCNN(nnx.Module):
    """The trainable parts of the two-stage detector; proposals, detections and losses are
    functions of its outputs (`postprocess`, `losses`)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = compute_dtype(cfg.precision)
        self.backbone = Backbone(cfg, rngs)
        self.fpn = FPN(cfg.widths, cfg.fpn_width, rngs, dtype)
        self.rpn = RPNHead(cfg.fpn_width, cfg.anchors_per_location, rngs, dtype)
        self.box_head = BoxHead(cfg.fpn_width * cfg.pool_size**2, cfg.head_width,
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
