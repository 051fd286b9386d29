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
- "taps": the transposed convolution as the adjoint of im2col: one matrix product of every input
  pixel with all 16 taps ([B*h*w, C] x [C, 16*C_out]), then the 16 shifted tap maps summed into the
  output (overlap-add). It does exactly the operation's multiply-adds, where "phase" and "matmul"
  compute (h+1) x (w+1) positions per phase (2.25x the work on a 2x2 map); the forward convolutions
  as in "phase".
- "hybrid" (the default): per operation the formulation measured fastest on XLA:CPU: stride-2
  convolutions as "matmul" on maps of at most `TINY_PX` pixels and as "phase" above; stride-1
  convolutions as "phase"; transposed convolutions as "matmul" on 1x1 maps and "taps" above.
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
    """The formulation of a forward convolution ("taps" and "hybrid" resolve here)."""
    if impl == "hybrid":
        return "matmul" if size <= TINY_PX else "phase"
    if impl == "taps":
        return "phase"
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


def _weave(phases: list[list[jax.Array]]) -> jax.Array:
    """phases[a][b] [B,h,w,o] -> out [B,2h,2w,o] with out[2m+a, 2n+b] = phases[a][b][m, n]."""
    bsz, h, w, cout = phases[0][0].shape
    out = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # [B, h, a, w, b, o]
    return out.reshape(bsz, 2 * h, 2 * w, cout)


def _interleave(q: jax.Array, h: int, w: int) -> jax.Array:
    """q [B,h+1,w+1,(a,b,o)] -> out [B,2h,2w,o] with out[2m+a, 2n+b] = q[m+a, n+b, (a,b)]."""
    q = q.reshape(q.shape[0], h + 1, w + 1, 2, 2, q.shape[-1] // 4)
    return _weave([[q[:, a : a + h, b : b + w, a, b] for b in range(2)] for a in range(2)])


# Output row 2m + a receives input row i through tap ky where 2i - 1 + ky = 2m + a: phase a = 0 from
# (i = m, ky = 1) and (i = m - 1, ky = 3), phase a = 1 from (i = m, ky = 2) and (i = m + 1, ky = 0).
# As (offset into the tap maps padded by one, tap); the same for columns.
_PHASE_TAPS = (((1, 1), (0, 3)), ((1, 2), (2, 0)))


def _taps_matrix(w: jax.Array) -> jax.Array:
    """[kh, kw, C, O] -> [C, kh * kw * O], columns ordered (ky, kx, o): each input pixel's row of
    taps."""
    return w.transpose(2, 0, 1, 3).reshape(w.shape[2], -1)


def _overlap_add(x: jax.Array, wt: jax.Array) -> jax.Array:
    """x [B,h,w,C] times the taps matrix `wt` [C, 16*O], the 16 tap maps summed into [B,2h,2w,O]."""
    b, h, wd, c = x.shape
    cout = wt.shape[-1] // 16
    taps = _matmul(x, wt).reshape(b, h, wd, 4, 4, cout)
    taps = jnp.pad(taps, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
    return _weave([[sum(taps[:, oy : oy + h, ox : ox + wd, ky, kx]
                        for oy, ky in _PHASE_TAPS[a] for ox, kx in _PHASE_TAPS[bx])
                    for bx in range(2)] for a in range(2)])


def _tap_patches(g: jax.Array) -> jax.Array:
    """The adjoint of the overlap-add: g [B,2h,2w,O] -> [B,h,w,16*O] with, for input pixel (i, j)
    and tap (ky, kx), the output value it was added to: g[2i - 1 + ky, 2j - 1 + kx] (0 outside)."""
    b, h2, w2, cout = g.shape
    h, wd = h2 // 2, w2 // 2
    # Padded row 2i + ky = 2(i + ky // 2) + ky % 2: split rows and columns by parity.
    q = _pad1(g).reshape(b, h + 1, 2, wd + 1, 2, cout)
    cols = [q[:, ky // 2 : ky // 2 + h, ky % 2, kx // 2 : kx // 2 + wd, kx % 2]
            for ky in range(4) for kx in range(4)]
    return jnp.concatenate(cols, axis=-1)


@jax.custom_vjp
def _conv_transpose_taps(x: jax.Array, w: jax.Array) -> jax.Array:
    """Every input pixel times all 16 taps in one matrix product, then overlap-add: each output
    phase sums four shifted tap maps.

    The gradients are the two matrix products of that product's adjoint, with the tap patches of
    the output gradient (`_tap_patches`, the overlap-add's adjoint) in place of the tap maps:
    dx = patches @ wt^T and dwt = x^T @ patches. Both read the taps matrix and the activations in
    the layouts the forward pass made, so no kernel is transposed element by element (the data
    gradient as a stride-2 convolution of g with w^T needs [4, 4, O, C]); the weight gradient
    leaves [C, 16, O] and becomes [4, 4, C, O] by moving whole rows of O.
    """
    return _overlap_add(x, _taps_matrix(w))


def _taps_fwd(x, w):
    wt = _taps_matrix(w)
    return _overlap_add(x, wt), (x, wt)


def _taps_bwd(residuals, g):
    x, wt = residuals
    b, h, wd, c = x.shape
    cout = wt.shape[-1] // 16
    patches = _tap_patches(g.astype(wt.dtype)).reshape(b * h * wd, 16 * cout)
    dx = lax.dot_general(patches, wt, (((1,), (1,)), ((), ())))  # patches @ wt^T
    dwt = lax.dot_general(x.reshape(b * h * wd, c), patches, (((0,), (0,)), ((), ())))  # x^T @ patches
    dw = dwt.reshape(c, 4, 4, cout).transpose(1, 2, 0, 3)
    return dx.reshape(x.shape).astype(x.dtype), dw.astype(wt.dtype)


_conv_transpose_taps.defvjp(_taps_fwd, _taps_bwd)


def conv_transpose4x4_s2(x: jax.Array, w: jax.Array, impl: str = "matmul") -> jax.Array:
    """ConvTranspose2d(kernel 4, stride 2, padding 1): [B,h,w,C] -> [B,2h,2w,Co]."""
    b, h, wd, c = x.shape
    if impl == "hybrid":
        impl = "matmul" if h == 1 and wd == 1 else "taps"
    if impl == "taps":
        return _conv_transpose_taps(x, w)
    if impl == "lax":
        return lax.conv_general_dilated(
            x, w[::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2), dimension_numbers=_DN
        )
    if impl == "matmul" and h == 1 and wd == 1:
        # 1x1 -> 2x2: output phase (a, b) is x times tap (1 + a, 1 + b).
        return (x.reshape(b, c) @ _taps_matrix(w[1:3, 1:3])).reshape(b, 2, 2, -1)
    k = _phase_kernel(w)
    p = _pad1(x)
    if impl == "phase":
        q = lax.conv_general_dilated(p, k, (1, 1), "VALID", dimension_numbers=_DN)
    elif impl == "matmul":
        q = _matmul(_im2col(p, 2, h + 1, wd + 1), k.reshape(4 * c, -1))
    else:
        raise ValueError(f"unknown convolution impl {impl!r}")
    return _interleave(q, h, wd)
