"""pix2pix networks (Isola et al. 2017) in Flax NNX: U-Net generator and PatchGAN discriminator.

The layout follows the PyTorch reference (junyanz/pytorch-CycleGAN-and-pix2pix, `unet_256` and
`basic`): 4x4 convolutions with stride 2 and padding 1, batch norm, no norm on the outermost and
innermost encoder layers, a bias only where the reference has one (the generator's last transposed
convolution, the discriminator's first and last convolutions), weights N(0, 0.02), batch-norm scales N(1, 0.02).

Depth follows the image size S (a power of two):

- generator: log2(S) downsamplings, so the bottleneck is always 1x1 (S=256 gives the reference's
  8, `unet_256`; S=64 gives 6). Widths ngf, 2ngf, 4ngf, then 8ngf for every deeper level. Dropout
  (p=0.5, the noise source) sits in the three decoder blocks after the innermost one, as in the
  reference at 256^2, and in fewer when the U-Net is too shallow to have three (never in the
  outermost block).
- discriminator: n_layers = max(1, log2(S) - 5) strided layers, which keeps the PatchGAN's patch at
  about a quarter of the image: 70x70 patches at 256^2 (the reference's `basic`, n_layers=3),
  34x34 at 128^2, 16x16 at 64^2.

Layouts are NHWC. Convolutions are stride-1 convolutions and matrix products (see `ops`), which
XLA:CPU runs several times faster than its strided and transposed convolutions; `impl="lax"`
gives the straightforward `lax.conv_general_dilated` formulation, numerically the same operation.

Precision (`Pix2PixConfig.precision`, `gan.precision`): parameters are float32. With "bfloat16"
the convolutions cast their input and weights to bfloat16 (mixed precision), batch norm computes
its statistics and running averages in float32 and hands bfloat16 on, and both networks return
float32 (images, logits), so the losses are float32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from billetjax.pix2pix import ops

INIT_STD = 0.02  # pix2pix reference: init_type="normal", init_gain=0.02
BN_EPS = 1e-5  # torch.nn.BatchNorm2d defaults
BN_MOMENTUM = 0.1
DROPOUT_RATE = 0.5
LEAKY_SLOPE = 0.2
MAX_DROPOUT_BLOCKS = 3
# How convolutions are computed (see ops): measured fastest on XLA:CPU, see README.
DEFAULT_IMPL = "hybrid"
# `precision` -> the dtype the convolutions compute in (parameters stay float32).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def unet_depth(image_size: int) -> int:
    """Number of U-Net downsamplings for a square image: log2(S), bottleneck 1x1."""
    depth = int(round(math.log2(image_size)))
    if 2**depth != image_size or depth < 3:
        raise ValueError(f"pix2pix image size must be a power of two >= 8, got {image_size}")
    return depth


def patchgan_layers(image_size: int) -> int:
    """Strided layers of the PatchGAN: 3 at 256^2 (70x70 patches), one fewer per halving, >= 1."""
    return max(1, unet_depth(image_size) - 5)


@dataclass(frozen=True)
class Pix2PixConfig:
    """What is needed to rebuild the networks (stored with every generator checkpoint)."""

    image_size: int
    ngf: int
    ndf: int
    precision: str  # "float32" or "bfloat16" (mixed precision; gan.precision)
    mask_channels: int = 1  # the reference feeds the mask as an RGB image (3)
    image_channels: int = 3
    impl: str = DEFAULT_IMPL

    def __post_init__(self):
        if self.precision not in COMPUTE_DTYPES:
            raise ValueError(f"gan.precision must be one of {sorted(COMPUTE_DTYPES)}, got {self.precision!r}")

    @property
    def compute_dtype(self):
        return COMPUTE_DTYPES[self.precision]

    def to_dict(self) -> dict:
        return asdict(self)


def _init_normal(rng: np.random.Generator, shape, mean=0.0) -> jax.Array:
    # NumPy draws: jax.random would compile one kernel per weight shape, tens of seconds on CPU.
    return jnp.asarray(rng.normal(mean, INIT_STD, shape).astype(np.float32))


class Conv(nnx.Module):
    """Conv2d(kernel 4, padding 1) with stride 2 (`down`) or 1, kernel stored HWIO."""

    def __init__(self, cin: int, cout: int, stride: int, use_bias: bool, impl: str, dtype, *, rng):
        self.kernel = nnx.Param(_init_normal(rng, (4, 4, cin, cout)))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32)) if use_bias else None
        self.stride = stride
        self.impl = impl
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel = x.astype(self.dtype), self.kernel[...].astype(self.dtype)
        if self.stride == 2:
            y = ops.conv4x4_s2(x, kernel, self.impl)
        else:
            y = ops.conv4x4_s1(x, kernel, self.impl)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)


class ConvTranspose(nnx.Module):
    """ConvTranspose2d(kernel 4, stride 2, padding 1); kernel [ky, kx, cin, cout] (torch's, permuted)."""

    def __init__(self, cin: int, cout: int, use_bias: bool, impl: str, dtype, *, rng):
        self.kernel = nnx.Param(_init_normal(rng, (4, 4, cin, cout)))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32)) if use_bias else None
        self.impl = impl
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = ops.conv_transpose4x4_s2(x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.impl)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)


class BatchNorm(nnx.Module):
    """Batch norm as torch.nn.BatchNorm2d (biased variance to normalise, unbiased in the average).

    `groups` splits the batch into equal groups normalised separately: the discriminator sees real
    and fake pairs in one call but, as in the reference's two forward passes, each with its own
    statistics. `track_running=False` keeps no running averages (the discriminator never uses them).
    Statistics and normalisation are computed in float32; the result has the input's dtype.
    """

    def __init__(self, channels: int, *, rng: np.random.Generator, track_running: bool = True):
        self.scale = nnx.Param(_init_normal(rng, (channels,), mean=1.0))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
        if track_running:
            self.mean = nnx.BatchStat(jnp.zeros((channels,), jnp.float32))
            self.var = nnx.BatchStat(jnp.ones((channels,), jnp.float32))
        self.track_running = track_running

    def __call__(self, x: jax.Array, use_running: bool = False, groups: int = 1) -> jax.Array:
        dtype = x.dtype
        x = x.astype(jnp.float32)
        if use_running:
            mean, var = self.mean[...], self.var[...]
            y = (x - mean) * (jax.lax.rsqrt(var + BN_EPS) * self.scale[...]) + self.bias[...]
            return y.astype(dtype)
        g = x.reshape((groups, -1) + x.shape[1:])
        mean = g.mean(axis=(1, 2, 3), keepdims=True)
        var = jnp.square(g - mean).mean(axis=(1, 2, 3), keepdims=True)
        y = (g - mean) * (jax.lax.rsqrt(var + BN_EPS) * self.scale[...]) + self.bias[...]
        if self.track_running:
            n = g.shape[1] * g.shape[2] * g.shape[3]
            batch_mean = mean.reshape(groups, -1).mean(0)
            batch_var = var.reshape(groups, -1).mean(0) * (n / max(n - 1, 1))
            self.mean[...] = (1 - BN_MOMENTUM) * self.mean[...] + BN_MOMENTUM * batch_mean
            self.var[...] = (1 - BN_MOMENTUM) * self.var[...] + BN_MOMENTUM * batch_var
        return y.reshape(x.shape).astype(dtype)


def _dropout(x: jax.Array, key: jax.Array | None) -> jax.Array:
    if key is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - DROPOUT_RATE, x.shape)
    return jnp.where(keep, x * (1.0 / (1.0 - DROPOUT_RATE)), 0.0)


class Generator(nnx.Module):
    """U-Net generator: mask [B,S,S,mask_channels] in [-1,1] -> image [B,S,S,3] in [-1,1]."""

    def __init__(self, config: Pix2PixConfig, *, rng: np.random.Generator):
        self.config = config
        depth = unet_depth(config.image_size)
        widths = [config.ngf * min(2**i, 8) for i in range(depth)]
        impl, dtype = config.impl, config.compute_dtype
        self.depth = depth
        # Encoder level i maps widths[i-1] -> widths[i]; level 0 has no norm (outermost), the last
        # level has no norm (innermost, 1x1). As in the reference no encoder convolution has a
        # bias (it sets bias=use_bias=False for all of them, norm or not).
        for i in range(depth):
            cin = config.mask_channels if i == 0 else widths[i - 1]
            has_norm = 0 < i < depth - 1
            setattr(self, f"down{i}", Conv(cin, widths[i], 2, False, impl, dtype, rng=rng))
            if has_norm:
                setattr(self, f"down_norm{i}", BatchNorm(widths[i], rng=rng))
        # Decoder level i maps the concatenation [skip_i, up_{i+1}] (or the bottleneck) to
        # widths[i-1]; level 0 is outermost (bias, tanh), all others have batch norm and no bias.
        for i in range(depth):
            cin = widths[i] if i == depth - 1 else 2 * widths[i]
            cout = config.image_channels if i == 0 else widths[i - 1]
            setattr(self, f"up{i}", ConvTranspose(cin, cout, i == 0, impl, dtype, rng=rng))
            if i > 0:
                setattr(self, f"up_norm{i}", BatchNorm(cout, rng=rng))
        # Dropout in the decoder blocks right after the innermost one (reference: up to three).
        self.dropout_levels = tuple(
            i for i in range(depth - 2, 0, -1) if depth - 1 - i <= MAX_DROPOUT_BLOCKS
        )

    def __call__(
        self, mask: jax.Array, dropout_key: jax.Array | None, use_running_stats: bool = False
    ) -> jax.Array:
        """Render images (float32); `dropout_key=None` switches dropout off (pix2pix keeps it on)."""
        skips = []
        h = mask
        for i in range(self.depth):
            if i > 0:
                h = jax.nn.leaky_relu(h, LEAKY_SLOPE)
            h = getattr(self, f"down{i}")(h)
            if 0 < i < self.depth - 1:
                h = getattr(self, f"down_norm{i}")(h, use_running_stats)
            skips.append(h)
        for i in range(self.depth - 1, -1, -1):
            if i < self.depth - 1:
                h = jnp.concatenate([skips[i], h], axis=-1)
            h = getattr(self, f"up{i}")(jax.nn.relu(h))
            if i == 0:
                return jnp.tanh(h.astype(jnp.float32))
            h = getattr(self, f"up_norm{i}")(h, use_running_stats)
            if i in self.dropout_levels and dropout_key is not None:
                h = _dropout(h, jax.random.fold_in(dropout_key, i))
        raise AssertionError("unreachable")


class Discriminator(nnx.Module):
    """PatchGAN: (mask, image) -> logits [B, P, P, 1], one per patch (no sigmoid)."""

    def __init__(self, config: Pix2PixConfig, *, rng: np.random.Generator):
        n_layers = patchgan_layers(config.image_size)
        impl, dtype = config.impl, config.compute_dtype
        widths = [config.ndf * min(2**i, 8) for i in range(n_layers + 1)]
        cin = config.mask_channels + config.image_channels
        self.n_layers = n_layers
        self.conv0 = Conv(cin, widths[0], 2, True, impl, dtype, rng=rng)
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            setattr(self, f"conv{i}", Conv(widths[i - 1], widths[i], stride, False, impl, dtype, rng=rng))
            setattr(self, f"norm{i}", BatchNorm(widths[i], rng=rng, track_running=False))
        self.head = Conv(widths[-1], 1, 1, True, impl, dtype, rng=rng)

    def __call__(self, mask: jax.Array, image: jax.Array, groups: int = 1) -> jax.Array:
        """`groups`: batch-norm statistics per equal part of the batch (real | fake); float32
        logits."""
        h = jax.nn.leaky_relu(self.conv0(jnp.concatenate([mask, image], axis=-1)), LEAKY_SLOPE)
        for i in range(1, self.n_layers + 1):
            h = getattr(self, f"conv{i}")(h)
            h = getattr(self, f"norm{i}")(h, groups=groups)
            h = jax.nn.leaky_relu(h, LEAKY_SLOPE)
        return self.head(h).astype(jnp.float32)


def count_params(module: nnx.Module) -> int:
    """Trainable parameters (batch-norm running averages are buffers, not counted)."""
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def param_counts(
    image_size: int = 256, ngf: int = 64, ndf: int = 64, mask_channels: int = 3
) -> tuple[int, int]:
    """(generator, discriminator) trainable parameter counts; the defaults are the reference's
    unet_256/basic with an RGB mask: 54,413,955 and 2,768,705."""
    # The counts do not depend on the precision (parameters are float32 either way).
    config = Pix2PixConfig(image_size=image_size, ngf=ngf, ndf=ndf, precision="float32",
                           mask_channels=mask_channels)
    g = nnx.eval_shape(lambda: Generator(config, rng=np.random.default_rng(0)))
    d = nnx.eval_shape(lambda: Discriminator(config, rng=np.random.default_rng(0)))
    return count_params(g), count_params(d)


def create_generator(config: Pix2PixConfig, seed: int) -> Generator:
    """A generator with weights drawn from `numpy.random.default_rng(seed)`."""
    return Generator(config, rng=np.random.default_rng(seed))


def create_discriminator(config: Pix2PixConfig, seed: int) -> Discriminator:
    """A discriminator with weights drawn from `numpy.random.default_rng(seed)`."""
    return Discriminator(config, rng=np.random.default_rng(seed))
