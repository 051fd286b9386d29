"""The three convolutions of pix2pix, each in interchangeable formulations (NHWC, kernels HWIO).

- `conv4x4_s2`: Conv2d(k=4, stride=2, padding=1), the encoder's downsampling.
- `conv4x4_s1`: Conv2d(k=4, stride=1, padding=1), the PatchGAN's last two layers.
- `conv_transpose4x4_s2`: ConvTranspose2d(k=4, stride=2, padding=1) with torch's semantics
  (out[2i - 1 + k] += x[i] * w[k]), the decoder's upsampling.

`impl` chooses how XLA computes them; all give the same numbers up to float rounding:

- "lax": `lax.conv_general_dilated` as written (the transposed one with lhs dilation). XLA:CPU runs
  the gradients of strided and dilated convolutions slowly.
- "phase": stride-2 convolutions as a space-to-depth rearrangement followed by a stride-1 2x2
  convolution; the transposed convolution as one stride-1 2x2 convolution producing the four
  output phases as channels, interleaved afterwards.
- "matmul": the same rearrangements, but every convolution as patches (im2col, a few slices) times
  a [K, C_out] matrix, which XLA:CPU hands to its tuned GEMM; maps of 2x2 and 1x1 at the U-Net's
  bottom become plain matrix products of the taps that meet data (the rest only meets padding).
- "hybrid": "matmul" on maps of at most `TINY_PX` pixels, "phase" on larger ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")
TINY_PX = 4  # "hybrid": maps up to this size use matrix products


def _pad1(x: jax.Array) -> jax.Array:
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def _matmul(patches: jax.Array, w2d: jax.Array) -> jax.Array:
    shape = patches.shape
    y = patches.reshape(-1, shape[-1]) @ w2d
    return y.reshape(shape[:-1] + (w2d.shape[-1],))


def _im2col(x: jax.Array, k: int, out_h: int, out_w: int) -> jax.Array:
    """Stride-1 k x k patches of x, channels ordered (ky, kx, c)."""
    cols = [x[:, ky : ky + out_h, kx : kx + out_w, :] for ky in range(k) for kx in range(k)]
    return jnp.concatenate(cols, axis=-1)


def _space_to_depth(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def _s2d_kernel(w: jax.Array) -> jax.Array:
    """4x4 kernel -> 2x2 kernel over space-to-depth channels: w[2qy+py, 2qx+px] -> [qy,qx,(py,px,c)]."""
    cin, cout = w.shape[2:]
    w = w.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    return w.reshape(2, 2, 4 * cin, cout)


def _resolve(impl: str, size: int) -> str:
    """'hybrid': matrix products on maps of at most TINY_PX, stride-1 convolutions above."""
    if impl == "hybrid":
        return "matmul" if size <= TINY_PX else "phase"
    return impl


def conv4x4_s2(x: jax.Array, w: jax.Array, impl: str = "matmul") -> jax.Array:
    """Conv2d(kernel 4, stride 2, padding 1): [B,H,W,C] -> [B,H/2,W/2,Co]."""
    b, h, wd, c = x.shape
    impl = _resolve(impl, h)
    if impl == "lax":
        return lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN)
    if impl == "matmul" and h == 2 and wd == 2:
        # 2x2 -> 1x1: only the central 2x2 taps meet data.
        return (x.reshape(b, 4 * c) @ w[1:3, 1:3].reshape(4 * c, -1)).reshape(b, 1, 1, -1)
    s = _space_to_depth(_pad1(x))
    k = _s2d_kernel(w)
    if impl == "phase":
        return lax.conv_general_dilated(s, k, (1, 1), "VALID", dimension_numbers=_DN)
    if impl == "matmul":
        return _matmul(_im2col(s, 2, h // 2, wd // 2), k.reshape(16 * c, -1))
    raise ValueError(f"unknown convolution impl {impl!r}")


def conv4x4_s1(x: jax.Array, w: jax.Array, impl: str = "matmul") -> jax.Array:
    """Conv2d(kernel 4, stride 1, padding 1): [B,H,W,C] -> [B,H-1,W-1,Co]."""
    impl = _resolve(impl, x.shape[1])
    if impl in ("lax", "phase"):
        return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DN)
    if impl == "matmul":
        h, wd, c = x.shape[1:]
        return _matmul(_im2col(_pad1(x), 4, h - 1, wd - 1), w.reshape(16 * c, -1))
    raise ValueError(f"unknown convolution impl {impl!r}")


def _phase_kernel(w: jax.Array) -> jax.Array:
    """Transposed 4x4 kernel -> 2x2 kernel with the four output phases as channels.

    Output (2m+a, 2n+b) reads padded input rows m+a+dy (dy in {0,1}) with tap ky = 3 - a - 2dy,
    i.e. the flipped kernel at index 2dy + a; likewise for columns.
    """
    cin, cout = w.shape[2:]
    wf = w[::-1, ::-1].reshape(2, 2, 2, 2, cin, cout)  # [dy, a, dx, b, c, o]
    return wf.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, cin, 4 * cout)  # [dy, dx, c, (a, b, o)]


def _interleave(q: jax.Array, h: int, w: int) -> jax.Array:
    """q [B,h+1,w+1,(a,b,o)] -> out [B,2h,2w,o] with out[2m+a, 2n+b] = q[m+a, n+b, (a,b)]."""
    bsz = q.shape[0]
    cout = q.shape[-1] // 4
    q = q.reshape(bsz, h + 1, w + 1, 2, 2, cout)
    phases = [[q[:, a : a + h, b : b + w, a, b] for b in range(2)] for a in range(2)]
    out = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # [B, h, a, w, b, o]
    return out.reshape(bsz, 2 * h, 2 * w, cout)


def conv_transpose4x4_s2(x: jax.Array, w: jax.Array, impl: str = "matmul") -> jax.Array:
    """ConvTranspose2d(kernel 4, stride 2, padding 1): [B,h,w,C] -> [B,2h,2w,Co]."""
    b, h, wd, c = x.shape
    impl = _resolve(impl, h)
    if impl == "lax":
        return lax.conv_general_dilated(
            x, w[::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2), dimension_numbers=_DN
        )
    if impl == "matmul" and h == 1 and wd == 1:
        # 1x1 -> 2x2: output phase (a, b) is x times tap (1 + a, 1 + b).
        taps = w[1:3, 1:3].transpose(2, 0, 1, 3).reshape(c, -1)  # [c, (a, b, o)]
        return (x.reshape(b, c) @ taps).reshape(b, 2, 2, -1)
    k = _phase_kernel(w)
    p = _pad1(x)
    if impl == "phase":
        q = lax.conv_general_dilated(p, k, (1, 1), "VALID", dimension_numbers=_DN)
    elif impl == "matmul":
        q = _matmul(_im2col(p, 2, h + 1, wd + 1), k.reshape(4 * c, -1))
    else:
        raise ValueError(f"unknown convolution impl {impl!r}")
    return _interleave(q, h, wd)
