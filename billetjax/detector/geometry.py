"""The detector's geometry: the strides of its feature maps, its blocks' widths, its training window.

These facts shape the network (`backbone`), its anchors (`spec`), RoI pooling (`roi_heads`) and
the training batches (`data`); the config check (`billetjax.config`) reads them when Snakemake
parses the workflow, to refuse an image size or a window the network cannot take. They live here,
with the detector, so that the detector owns its geometry and the resume fingerprint of a
training (`train.fingerprint`) covers them. Standard library only: the Snakemake process imports
this module on every invocation.
"""

from __future__ import annotations

# The backbone's stem downsamples by 4 (two stride-2 convolutions, or 4x4 space-to-depth); each
# further stage of `detector.model.widths` halves again (`backbone.Backbone`).
STEM_STRIDE = 4
# A bottleneck block's inner (1x1 - 3x3) width is its output width / this (ResNet-50's 4).
BOTTLENECK_EXPANSION = 4


def backbone_strides(n_stages: int) -> tuple[int, ...]:
    """Strides of the backbone's stages (one per entry of `detector.model.widths`), which are
    those of the FPN levels: 4, 8, 16, ..."""
    return tuple(STEM_STRIDE * 2**i for i in range(n_stages))


def training_window_px(crop_px: int, image_size_px: int) -> int:
    """The side of the images a detector's training step sees: `detector.augment.crop_px` where
    it is set (> 0) and smaller than the image, else the whole image."""
    return int(crop_px) if 0 < crop_px < image_size_px else int(image_size_px)
