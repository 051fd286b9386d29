"""The GAN path of the stamp banks with a tiny untrained generator (the pix2pix stage's file format)."""

import numpy as np

from billetjax.synth.pool import bank_plan, make_bank

MARGIN = 0.15


def test_gan_bank_renders_with_a_saved_generator(tmp_path, make_config):
    """The GAN path end to end with a tiny untrained generator: shapes, types, seeded."""
    from billetjax.pix2pix import Generator, Pix2PixConfig, save_generator

    size = 16  # small: compiling the U-Net dominates this test
    generator = Generator(Pix2PixConfig(image_size=size, ngf=4, ndf=4, precision="float32"), rng=np.random.default_rng(0))
    path = save_generator(tmp_path / "generator_step200.msgpack", generator, 200)
    config = make_config({"seed": 7, "image_size_px": 256, "synth": {
        "method": "gan", "checkpoints": [100, 200], "images": 3, "characters_per_image": 4, "partial_image_fraction": 0.5}})
    out = tmp_path / "gan" / "stamps_step200.npz"
    make_bank(config, "gan", out, size, MARGIN, checkpoint=200, generator_path=path, batch_size=4)
    bank = np.load(out)
    n = bank_plan(config).per_checkpoint
    assert bank["images"].shape == (n, size, size, 3) and bank["images"].dtype == np.uint8
    assert bank["masks"].shape == bank["silhouettes"].shape == (n, size, size)
    assert (bank["checkpoint"] == 200).all() and bank["stamp_index"][0] == n
    # The GAN gets the silhouettes, as its training pairs had them.
    np.testing.assert_array_equal(bank["inputs"], bank["silhouettes"])
    again = tmp_path / "again.npz"
    make_bank(config, "gan", again, size, MARGIN, checkpoint=200, generator_path=path, batch_size=4)
    np.testing.assert_array_equal(np.load(again)["images"], bank["images"])
