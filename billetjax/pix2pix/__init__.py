"""pix2pix (Isola et al. 2017) in Flax NNX: the stamp renderer of the synthesis stage."""

from billetjax.pix2pix.models import Discriminator, Generator, Pix2PixConfig, param_counts
from billetjax.pix2pix.sample import load_generator, render_stamps, save_generator
from billetjax.pix2pix.train import TrainConfig, train

__all__ = [
    "Discriminator", "Generator", "Pix2PixConfig", "TrainConfig", "load_generator",
    "param_counts", "render_stamps", "save_generator", "train",
]
