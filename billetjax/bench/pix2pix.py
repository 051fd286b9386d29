"""Benchmark: our jitted pix2pix training step against the same networks in PyTorch (eager).

Both sides train the same architecture (U-Net generator, PatchGAN discriminator, depth by image
size as in `billetjax.pix2pix.models`, asserted equal parameter counts) with the same step:
D on (real, fake.detach()), then G on GAN + 100 L1, Adam(2e-4, 0.5). Rounds alternate between
the two so that a shared, noisy machine slows both alike; we report medians over rounds, the
peer's at its best thread count (all cores, or one).
The last printed line is JSON: {"ours_steps_per_s", "peer_steps_per_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import numpy as np

from billetjax.pix2pix.models import DEFAULT_IMPL, param_counts, patchgan_layers, unet_depth
from billetjax.pix2pix.train import TrainConfig, create_state, make_train_step

# The step both sides run: the reference's Adam(2e-4, beta1 0.5) and L1 weight 100.
LEARNING_RATE = 2e-4
BETA1 = 0.5
L1_WEIGHT = 100.0


def build_torch_models(image_size: int, ngf: int, ndf: int, mask_channels: int = 1):
    """The reference's unet/basic layout in PyTorch (bias where the reference has one)."""
    import torch
    import torch.nn as nn

    depth = unet_depth(image_size)
    widths = [ngf * min(2**i, 8) for i in range(depth)]

    class Block(nn.Module):
        def __init__(self, level: int, inner: nn.Module | None):
            super().__init__()
            cin = mask_channels if level == 0 else widths[level - 1]
            cout = 3 if level == 0 else widths[level - 1]
            down = [] if level == 0 else [nn.LeakyReLU(0.2)]
            down.append(nn.Conv2d(cin, widths[level], 4, 2, 1, bias=False))
            if 0 < level < depth - 1:
                down.append(nn.BatchNorm2d(widths[level]))
            up_in = widths[level] if inner is None else 2 * widths[level]
            up = [nn.ReLU(), nn.ConvTranspose2d(up_in, cout, 4, 2, 1, bias=level == 0)]
            if level == 0:
                up.append(nn.Tanh())
            else:
                up.append(nn.BatchNorm2d(cout))
                if level < depth - 1 and depth - 1 - level <= 3:
                    up.append(nn.Dropout(0.5))
            self.down, self.inner, self.up = nn.Sequential(*down), inner, nn.Sequential(*up)
            self.outermost = level == 0

        def forward(self, x):
            h = self.down(x)
            if self.inner is not None:
                h = self.inner(h)
            y = self.up(h)
            return y if self.outermost else torch.cat([x, y], 1)

    block = None
    for level in range(depth - 1, -1, -1):
        block = Block(level, block)
    generator = block

    n_layers = patchgan_layers(image_size)
    dw = [ndf * min(2**i, 8) for i in range(n_layers + 1)]
    layers = [nn.Conv2d(mask_channels + 3, dw[0], 4, 2, 1), nn.LeakyReLU(0.2)]
    for i in range(1, n_layers + 1):
        stride = 2 if i < n_layers else 1
        layers += [nn.Conv2d(dw[i - 1], dw[i], 4, stride, 1, bias=False), nn.BatchNorm2d(dw[i]),
                   nn.LeakyReLU(0.2)]
    layers.append(nn.Conv2d(dw[-1], 1, 4, 1, 1))
    discriminator = nn.Sequential(*layers)
    for m in list(generator.modules()) + list(discriminator.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return generator, discriminator


def torch_step_fn(generator, discriminator, batch_size: int, image_size: int, seed: int):
    """A closure running one reference-style training step on fixed random data."""
    import torch

    torch.manual_seed(seed)
    masks = torch.rand(batch_size, 1, image_size, image_size) * 2 - 1
    images = torch.rand(batch_size, 3, image_size, image_size) * 2 - 1
    opt_g = torch.optim.Adam(generator.parameters(), lr=LEARNING_RATE, betas=(BETA1, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=LEARNING_RATE, betas=(BETA1, 0.999))
    bce = torch.nn.BCEWithLogitsLoss()
    generator.train()
    discriminator.train()

    def step():
        fake = generator(masks)
        opt_d.zero_grad(set_to_none=True)
        pred_fake = discriminator(torch.cat([masks, fake.detach()], 1))
        pred_real = discriminator(torch.cat([masks, images], 1))
        loss_d = 0.5 * (bce(pred_fake, torch.zeros_like(pred_fake)) + bce(pred_real, torch.ones_like(pred_real)))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        pred = discriminator(torch.cat([masks, fake], 1))
        loss_g = bce(pred, torch.ones_like(pred)) + L1_WEIGHT * (fake - images).abs().mean()
        loss_g.backward()
        opt_g.step()
        return loss_g.item()

    return step


def jax_step_fn(cfg: TrainConfig, impl: str, seed: int):
    """A closure running our jitted step (state carried and donated), on random pairs."""
    models, state = create_state(cfg, seed, impl)
    step_fn = make_train_step(models, cfg, seed)
    rng = np.random.default_rng(seed)
    s = cfg.image_size_px
    masks = jax.device_put(rng.integers(0, 256, (64, s, s), dtype=np.uint8))
    images = jax.device_put(rng.integers(0, 256, (64, s, s, 3), dtype=np.uint8))
    box = {"state": state}

    def step():
        box["state"], metrics = step_fn(box["state"], masks, images)
        return metrics

    def sync(metrics):
        jax.block_until_ready(metrics)

    return step, sync


def _time(step, sync, n: int) -> float:
    t0 = time.perf_counter()
    out = None
    for _ in range(n):
        out = step()
    sync(out)
    return n / (time.perf_counter() - t0)


def run(image_size=64, ngf=32, ndf=32, batch_size=8, rounds=5, steps=10, impl=DEFAULT_IMPL,
        threads=None, seed=0) -> dict:
    """Time both steps in alternating rounds; returns the medians and their ratio."""
    import torch

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    # No jitter (the peer has none); steps and the checkpoint and log periods do not enter the step.
    cfg = TrainConfig(image_size_px=image_size, ngf=ngf, ndf=ndf, batch_size=batch_size, steps=steps,
                      checkpoint_every=steps, learning_rate=LEARNING_RATE, beta1=BETA1, l1_weight=L1_WEIGHT,
                      log_every=steps, jitter_px=0)
    g, d = build_torch_models(image_size, ngf, ndf)
    peer_counts = (sum(p.numel() for p in g.parameters()), sum(p.numel() for p in d.parameters()))
    ours_counts = param_counts(image_size, ngf, ndf, mask_channels=1)
    assert ours_counts == peer_counts, f"parameter counts differ: ours {ours_counts}, peer {peer_counts}"
    print(f"pix2pix {image_size}^2 ngf {ngf} ndf {ndf} batch {batch_size} impl {impl}; "
          f"G {ours_counts[0]:,} D {ours_counts[1]:,} params (both); torch threads {threads}; "
          f"jax {jax.devices()[0].platform}", flush=True)
    ours_step, ours_sync = jax_step_fn(cfg, impl, seed)
    peer_step = torch_step_fn(g, d, batch_size, image_size, seed)
    t0 = time.perf_counter()
    ours_sync(ours_step())  # compile
    print(f"compile + first step: {time.perf_counter() - t0:.1f} s", flush=True)
    peer_step()  # warm up
    # The peer runs with `threads` and, where that is more than one, also with one thread: on a
    # busy machine OpenMP's spinning threads can make torch 10x slower with 2 threads than with
    # one, and the peer is credited with its best setting.
    peer_threads = sorted({threads, 1}, reverse=True)
    ours, peer = [], {t: [] for t in peer_threads}
    for r in range(rounds):
        ours.append(_time(ours_step, ours_sync, steps))
        for t in peer_threads:
            torch.set_num_threads(t)
            peer[t].append(_time(peer_step, lambda _: None, steps))
        print(f"round {r + 1}/{rounds}: ours {ours[-1]:.2f} steps/s, peer "
              + ", ".join(f"{peer[t][-1]:.2f} steps/s ({t} threads)" for t in peer_threads), flush=True)
    torch.set_num_threads(threads)
    peer_medians = {t: statistics.median(v) for t, v in peer.items()}
    result = {
        "ours_steps_per_s": statistics.median(ours),
        "peer_steps_per_s": max(peer_medians.values()),
    }
    result["ratio"] = result["ours_steps_per_s"] / result["peer_steps_per_s"]
    result["peer_steps_per_s_by_threads"] = {str(t): v for t, v in peer_medians.items()}
    result.update(image_size=image_size, ngf=ngf, ndf=ndf, batch_size=batch_size, impl=impl,
                  threads=threads, device=str(jax.devices()[0].platform))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m billetjax.bench pix2pix", description=__doc__)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--ndf", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per round and side")
    parser.add_argument("--impl", default=DEFAULT_IMPL, choices=["hybrid", "matmul", "phase", "lax"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    args = parser.parse_args(argv)
    result = run(args.image_size, args.ngf, args.ndf, args.batch_size, args.rounds, args.steps,
                 args.impl, args.threads)
    print(f"ours {result['ours_steps_per_s']:.2f} steps/s, peer (PyTorch eager, best thread count) "
          f"{result['peer_steps_per_s']:.2f} steps/s, ratio {result['ratio']:.2f}")
    print(json.dumps(result))
