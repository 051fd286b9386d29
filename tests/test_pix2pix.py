"""pix2pix networks and ops: reference parameter counts, convolutions against PyTorch, rendering."""

import numpy as np
import pytest
import torch
from flax import nnx, serialization

import jax
import jax.numpy as jnp

from billetjax.pix2pix import ops
from billetjax.pix2pix.models import (
    Pix2PixConfig, create_discriminator, create_generator, param_counts, patchgan_layers,
    unet_depth,
)
from billetjax.pix2pix.sample import load_generator, render_stamps, save_generator

IMPLS = ["lax", "phase", "matmul", "taps", "hybrid"]


def test_reference_parameter_counts():
    # pytorch-CycleGAN-and-pix2pix: unet_256 (54.414 M) and basic PatchGAN (2.769 M), RGB input.
    assert param_counts(image_size=256, ngf=64, ndf=64) == (54_413_955, 2_768_705)


def test_depth_follows_image_size():
    assert [unet_depth(s) for s in (32, 64, 128, 256)] == [5, 6, 7, 8]
    assert [patchgan_layers(s) for s in (32, 64, 128, 256)] == [1, 1, 2, 3]
    with pytest.raises(ValueError, match="power of two"):
        unet_depth(96)


def test_same_counts_as_the_torch_peer():
    from billetjax.bench.pix2pix import build_torch_models

    for size, ngf, ndf in [(64, 32, 32), (256, 64, 64), (32, 8, 16)]:
        g, d = build_torch_models(size, ngf, ndf, mask_channels=1)
        expected = (sum(p.numel() for p in g.parameters()), sum(p.numel() for p in d.parameters()))
        assert param_counts(size, ngf, ndf, mask_channels=1) == expected


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_convolutions_match_torch(impl, size):
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, size, size, 5)).astype(np.float32)
    w = rng.standard_normal((4, 4, 5, 6)).astype(np.float32)
    xt, wt = torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(w)

    def nhwc(t):
        return t.permute(0, 2, 3, 1).numpy()

    # torch's ConvTranspose2d weight is [in, out, kh, kw]; ours [kh, kw, in, out].
    ref = nhwc(torch.nn.functional.conv_transpose2d(xt, wt.permute(2, 3, 0, 1), stride=2, padding=1))
    np.testing.assert_allclose(ops.conv_transpose4x4_s2(jnp.asarray(x), jnp.asarray(w), impl), ref, atol=1e-4)
    if size >= 2:
        w_conv = wt.permute(3, 2, 0, 1)  # torch Conv2d weight [out, in, kh, kw]
        ref = nhwc(torch.nn.functional.conv2d(xt, w_conv, stride=2, padding=1))
        np.testing.assert_allclose(ops.conv4x4_s2(jnp.asarray(x), jnp.asarray(w), impl), ref, atol=1e-4)
        ref = nhwc(torch.nn.functional.conv2d(xt, w_conv, stride=1, padding=1))
        np.testing.assert_allclose(ops.conv4x4_s1(jnp.asarray(x), jnp.asarray(w), impl), ref, atol=1e-4)


@pytest.mark.parametrize("size", [2, 4, 8, 16])
def test_gradients_agree_between_impls(size):
    # The transposed convolution sees maps of size/2 (1 x 1 to 8 x 8); "taps" has its own gradient.
    rng = np.random.default_rng(size)
    x = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)
    w = jnp.asarray(0.2 * rng.standard_normal((4, 4, 3, 4)), jnp.float32)

    def loss(impl):
        def f(x, w):
            return jnp.sum(jnp.tanh(ops.conv_transpose4x4_s2(ops.conv4x4_s2(x, w, impl), w.transpose(0, 1, 3, 2), impl)))
        return jax.grad(f, argnums=(0, 1))(x, w)

    ref = loss("lax")
    for impl in IMPLS[1:]:
        for a, b in zip(loss(impl), ref):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@nnx.jit(static_argnums=3)
def run_generator(g, mask, key, use_running_stats=False):
    # Jitted: op-by-op eager execution of a U-Net compiles every op apart, which takes long.
    return g(mask, key, use_running_stats)


def small_generator(seed=0, size=32):
    config = Pix2PixConfig(image_size=size, ngf=8, ndf=8, precision="float32")
    return create_generator(config, seed), config


def test_networks_shapes_and_dropout_noise():
    g, config = small_generator()
    d = create_discriminator(config, 1)
    mask = jnp.ones((3, 32, 32, 1))
    a = run_generator(g, mask, jax.random.key(0))
    b = run_generator(g, mask, jax.random.key(1))
    assert a.shape == (3, 32, 32, 3) and float(jnp.abs(a).max()) <= 1.0
    assert float(jnp.abs(a - b).max()) > 0  # dropout is the noise source
    np.testing.assert_array_equal(run_generator(g, mask, None, True), run_generator(g, mask, None, True))
    assert g.dropout_levels == (3, 2, 1)
    # 32 px, one strided layer: 32 -> 16 -> 15 -> 14 patches.
    assert nnx.jit(lambda d, m, x: d(m, x))(d, mask, a).shape == (3, 14, 14, 1)


def test_generator_file_roundtrip_is_bit_identical(tmp_path):
    g, _ = small_generator(seed=3)
    run_generator(g, jnp.ones((3, 32, 32, 1)), jax.random.key(0))  # move the batch-norm averages off their init
    path = save_generator(tmp_path / "generator_step7.msgpack", g, step=7)
    restored = load_generator(path)
    for a, b in zip(jax.tree.leaves(nnx.state(g)), jax.tree.leaves(nnx.state(restored))):
        np.testing.assert_array_equal(a, b)
    assert restored.config == g.config


def test_render_stamps(tmp_path):
    g, _ = small_generator(seed=4)
    path = save_generator(tmp_path / "g.msgpack", g, step=1)
    masks = np.zeros((5, 32, 32), np.uint8)
    masks[:, 8:24, 10:20] = 255
    a = render_stamps(path, masks, seed=0, batch_size=2)
    assert a.shape == (5, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, render_stamps(path, masks, seed=0, batch_size=2))
    assert np.abs(a.astype(int) - render_stamps(path, masks, seed=1, batch_size=2)).max() > 0
    with pytest.raises(ValueError, match="uint8"):
        render_stamps(path, masks[:, :16, :16], seed=0)
    with pytest.raises(FileNotFoundError):
        render_stamps(tmp_path / "missing.msgpack", masks, seed=0)


def test_generator_written_before_gan_precision_existed_loads_as_float32(tmp_path):
    g, _ = small_generator(seed=5)
    path = save_generator(tmp_path / "g.msgpack", g, step=1)
    payload = serialization.msgpack_restore(path.read_bytes())
    del payload["config"]["precision"]
    path.write_bytes(serialization.msgpack_serialize(payload))
    assert load_generator(path).config == g.config and g.config.precision == "float32"
    with pytest.raises(ValueError, match="gan.precision must be one of"):
        Pix2PixConfig(image_size=32, ngf=8, ndf=8, precision="float16")
