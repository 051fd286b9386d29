"""The backbone and the feature pyramid (Flax NNX modules): ResNet-style stages of basic or
bottleneck blocks over a stride-4 stem, and an FPN on top of them.

Features are NHWC in the compute dtype of `ModelConfig.precision` (parameters stay float32: the
layers cast them). The strides of the levels are `geometry.backbone_strides`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from billetjax.detector.geometry import BOTTLENECK_EXPANSION, STEM_STRIDE
from billetjax.detector.spec import ModelConfig

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
    """ResNet-style backbone: a stem of stride `STEM_STRIDE` (two stride-2 convolutions, or
    `STEM_STRIDE` x `STEM_STRIDE` space-to-depth), then one stage per output level, each after the
    first halving the map (`geometry.backbone_strides`: 4, 8, ...)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        if cfg.stem not in ("conv", "space_to_depth"):
            raise ValueError(f"detector.model.stem must be 'conv' or 'space_to_depth', got {cfg.stem!r}")
        if cfg.block not in BLOCKS:
            raise ValueError(f"detector.model.block must be one of {sorted(BLOCKS)}, got {cfg.block!r}")
        block_type = BLOCKS[cfg.block]
        dtype = compute_dtype(cfg.precision)
        self.space_to_depth = cfg.stem == "space_to_depth"
        if self.space_to_depth:
            self.stem = _conv(3 * STEM_STRIDE**2, cfg.stem_width, 3, 1, rngs, dtype)
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
            x = jax.nn.relu(self.stem_norm(self.stem(space_to_depth(x, STEM_STRIDE))))
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
