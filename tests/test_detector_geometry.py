"""billetjax.detector.geometry: the detector's strides, stem, bottleneck width and training window
against the network they describe, and light enough for the parse-time config check."""

from __future__ import annotations

import subprocess
import sys

import jax.numpy as jnp
import pytest
from flax import nnx

from billetjax.detector import geometry
from billetjax.detector.backbone import Backbone, BottleneckBlock
from billetjax.detector.spec import ModelConfig


def _model(**fields) -> ModelConfig:
    small = dict(num_classes=10, stem_width=8, widths=(8, 16, 16), blocks=(1, 1, 1), fpn_width=8,
                 head_width=8, anchors_per_location=1, anchor_levels=1, pool_size=7, groups=4,
                 stem="conv", block="basic", precision="float32")
    return ModelConfig(**{**small, **fields})


@pytest.mark.parametrize("stem", ["conv", "space_to_depth"])
@pytest.mark.parametrize("stages", [1, 3, 4])
def test_the_backbones_levels_lie_at_the_strides(stem, stages):
    """Each stage's map is the image over `backbone_strides` (a 96 px image: 24, 12, 6, 3 cells),
    the first over the stem's stride, for both stems."""
    model = _model(stem=stem, widths=(8,) * stages, blocks=(1,) * stages)
    features = Backbone(model, nnx.Rngs(0))(jnp.zeros((1, 96, 96, 3)))
    assert [f.shape[1:3] for f in features] == [(96 // s, 96 // s) for s in geometry.backbone_strides(stages)]
    assert geometry.backbone_strides(stages)[0] == geometry.STEM_STRIDE == 4
    assert geometry.backbone_strides(4) == (4, 8, 16, 32)  # ResNet's C2-C5
    assert model.strides == geometry.backbone_strides(stages)


def test_a_bottleneck_blocks_inner_width_is_its_width_over_the_expansion():
    block = BottleneckBlock(8, 32, 1, 4, nnx.Rngs(0), jnp.float32)
    inner = 32 // geometry.BOTTLENECK_EXPANSION
    assert geometry.BOTTLENECK_EXPANSION == 4  # ResNet-50's
    assert block.conv1.kernel[...].shape == (1, 1, 8, inner)
    assert block.conv2.kernel[...].shape == (3, 3, inner, inner)
    assert block.conv3.kernel[...].shape == (1, 1, inner, 32)


@pytest.mark.parametrize("crop_px,image_px,window", [(0, 256, 256), (160, 256, 160), (256, 256, 256),
                                                     (320, 256, 256), (96, 128, 96)])
def test_training_window(crop_px, image_px, window):
    assert geometry.training_window_px(crop_px, image_px) == window


def test_the_config_check_takes_the_detectors_geometry_and_stays_light():
    """billetjax.config uses the detector's own functions (no copy that could drift), and
    importing it, as Snakemake does on every parse, loads neither NumPy nor JAX; the geometry
    module itself imports nothing outside the standard library."""
    from billetjax import config

    assert config.backbone_strides is geometry.backbone_strides
    assert config.training_window_px is geometry.training_window_px
    assert config.BOTTLENECK_EXPANSION is geometry.BOTTLENECK_EXPANSION
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, billetjax.config; print(*sorted(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert not {m.split(".")[0] for m in loaded} & {"numpy", "jax", "flax", "cv2", "yaml"}
