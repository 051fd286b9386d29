"""The paper preset's models (presets/paper.yaml) train on the CPU: two steps each of the
ResNet-50-FPN-class detector at 1024 px and of pix2pix at 256 px (batch 1), through
`python -m billetjax.bench steps`, with the parameters, FLOPs and memory it reports checked
against independent references (torchvision's models, ResNet-50's published cost, PyTorch's FLOP
counter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from billetjax.bench.steps import run_steps
from billetjax.bench.work import load_config

ROOT = Path(__file__).resolve().parents[1]
# ResNet-50's published cost: 4.1 GMACs per 224 x 224 image (He et al. 2016, Table 1).
RESNET50_MACS_224 = 4.1e9


@pytest.fixture(scope="module")
def paper():
    return load_config(ROOT / "presets/paper.yaml")


@pytest.mark.slow
def test_paper_detector_trains_two_steps_on_the_cpu(paper):
    from billetjax.bench.detector import build_torch_detector, synthetic_batch
    from billetjax.detector.spec import DetectorConfig, make_spec

    line = run_steps("detector", paper, steps=2, batch_size=1)
    assert (line["image_size_px"], line["block"], line["batch_size"]) == (1024, "bottleneck", 1)
    assert line["precision"] == paper["detector"]["precision"]
    assert np.isfinite(line["first_loss"]) and np.isfinite(line["last_loss"])
    # the same architecture built by torchvision has the same parameters
    cfg = DetectorConfig.from_config(paper["detector"])
    _, boxes, _, valid = synthetic_batch(np.random.default_rng(0), 1, 1024, cfg.max_boxes, 10)
    b = boxes[valid]
    spec, _ = make_spec(cfg, 1024, tuple(range(1, 11)), np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1))
    assert line["params"] == sum(p.numel() for p in build_torch_detector(spec).parameters())
    assert 40e6 < line["params"] < 45e6  # ResNet-50's body (23.5 M), FPN, heads (13.9 M)
    # a training step is at least three ResNet-50 forward passes at 1024 px (FPN and heads on top)
    resnet50_forward = 2 * RESNET50_MACS_224 * (1024 / 224) ** 2
    assert 3 * resnet50_forward < line["flops_per_step"] < 8 * resnet50_forward
    # weights, gradients and momentum in float32, and the activations
    assert line["peak_bytes"] > 3 * 4 * line["params"] + 1024**2 * 3


@pytest.mark.slow
def test_paper_pix2pix_trains_two_steps_on_the_cpu(paper):
    from dataclasses import replace

    from billetjax.bench.pix2pix import build_torch_models, torch_step_fn
    from billetjax.bench.work import torch_flops
    from billetjax.pix2pix.models import param_counts
    from billetjax.pix2pix.train import TrainConfig

    line = run_steps("pix2pix", paper, steps=2)
    assert (line["image_size_px"], line["ngf"], line["ndf"], line["batch_size"]) == (256, 64, 64, 1)
    assert np.isfinite(line["first_g_l1"]) and np.isfinite(line["last_g_l1"])
    assert line["params"] == sum(param_counts(256, 64, 64, mask_channels=1))
    g, d = build_torch_models(256, 64, 64)
    assert line["params"] == sum(p.numel() for p in [*g.parameters(), *d.parameters()])
    # The same work within 10 %: XLA counts elementwise operations too, which PyTorch's counter
    # leaves out, while our convolutions skip the taps that meet only padding at the U-Net's 2x2
    # and 1x1 levels, which it counts (86.6 against 92.7 GFLOP).
    cfg = replace(TrainConfig.from_config(paper["gan"]), precision="float32")
    peer = torch_flops(torch_step_fn(g, d, cfg, seed=0))
    assert 0.9 < line["flops_per_step"] / peer < 1.1
    # weights, gradients and Adam's two moments in float32
    assert line["peak_bytes"] > 4 * 4 * line["params"]
