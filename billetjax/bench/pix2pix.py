"""Benchmark: our jitted pix2pix training step against the same networks in PyTorch (eager).

Both sides train the same architecture (U-Net generator, PatchGAN discriminator, depth by image
size as in `billetjax.pix2pix.models`, asserted equal parameter counts) with the same step:
D on (real, fake.detach()), then G on GAN + l1_weight L1, Adam(learning_rate, beta1), all from
the config's `gan` section (`--config` merged over config.yaml as `snakemake --configfile` does;
the reference's 2e-4, 0.5 and 100 by default), without jitter (the peer has none); with
`gan.precision: bfloat16` ours computes in bfloat16 and the peer runs under
`torch.autocast(bfloat16)`. Rounds alternate between the two so that a shared, noisy machine
slows both alike; we report medians over rounds, the peer's at its best thread count (all cores,
or one).

Beside the speed, the work (`billetjax.bench.work`): our step is compiled ahead of time once and
its FLOPs (XLA's cost analysis), memory (XLA's memory analysis: `peak_bytes`), parameter count
and compile time are reported with the achieved FLOP/s of both sides (one FLOP count for the same
work; the peer's own count from `torch.utils.flop_counter` beside it) and their fractions of the
CPU's measured and theoretical peak.
The last printed line is JSON: {"ours_steps_per_s", "peer_steps_per_s", "ratio", ..., "params",
"flops_per_step", "peak_bytes", "compile_s", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext
from dataclasses import replace

import jax
import numpy as np

from billetjax.bench import work
from billetjax.bench.work import ROOT, load_config
from billetjax.pix2pix.models import DEFAULT_IMPL, param_counts, patchgan_layers, unet_depth
from billetjax.pix2pix.train import TrainConfig, create_state, make_train_step

# Random training pairs our step draws its batches from (device-resident, as in training).
PAIRS = 64


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


def torch_step_fn(generator, discriminator, cfg: TrainConfig, seed: int):
    """A closure running one reference-style training step on fixed random data (under
    `torch.autocast(bfloat16)` when `cfg.precision` is bfloat16)."""
    import torch

    torch.manual_seed(seed)
    s = cfg.image_size_px
    masks = torch.rand(cfg.batch_size, 1, s, s) * 2 - 1
    images = torch.rand(cfg.batch_size, 3, s, s) * 2 - 1
    betas = (cfg.beta1, 0.999)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.learning_rate, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.learning_rate, betas=betas)
    bce = torch.nn.BCEWithLogitsLoss()
    generator.train()
    discriminator.train()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) \
        if cfg.precision == "bfloat16" else nullcontext

    def step():
        with autocast():
            fake = generator(masks)
            pred_fake = discriminator(torch.cat([masks, fake.detach()], 1))
            pred_real = discriminator(torch.cat([masks, images], 1))
            loss_d = 0.5 * (bce(pred_fake.float(), torch.zeros_like(pred_fake, dtype=torch.float32))
                            + bce(pred_real.float(), torch.ones_like(pred_real, dtype=torch.float32)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with autocast():
            pred = discriminator(torch.cat([masks, fake], 1))
            loss_g = (bce(pred.float(), torch.ones_like(pred, dtype=torch.float32))
                      + cfg.l1_weight * (fake.float() - images).abs().mean())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return loss_g.item()

    return step


def build_ours(cfg: TrainConfig, impl: str = DEFAULT_IMPL, seed: int = 0):
    """Our models, state, jitted step and `PAIRS` random device-resident training
    pairs: `(models, state, step_fn, masks, images)`."""
    models, state = create_state(cfg, seed, impl)
    step_fn = make_train_step(models, cfg, seed)
    rng = np.random.default_rng(seed)
    s = cfg.image_size_px
    masks = jax.device_put(rng.integers(0, 256, (PAIRS, s, s), dtype=np.uint8))
    images = jax.device_put(rng.integers(0, 256, (PAIRS, s, s, 3), dtype=np.uint8))
    return models, jax.device_put(state, jax.devices()[0]), step_fn, masks, images


def run(cfg: TrainConfig, rounds: int, steps: int, impl: str = DEFAULT_IMPL, threads: int | None = None,
        seed: int = 0) -> dict:
    """Time both steps in alternating rounds; returns the medians, their ratio and the work."""
    import torch

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    # No jitter (the peer has none); steps and the checkpoint and log periods do not enter the step.
    cfg = replace(cfg, jitter_px=0)
    size = cfg.image_size_px
    g, d = build_torch_models(size, cfg.ngf, cfg.ndf)
    peer_counts = (sum(p.numel() for p in g.parameters()), sum(p.numel() for p in d.parameters()))
    ours_counts = param_counts(size, cfg.ngf, cfg.ndf, mask_channels=1)
    assert ours_counts == peer_counts, f"parameter counts differ: ours {ours_counts}, peer {peer_counts}"
    print(f"pix2pix {size}^2 ngf {cfg.ngf} ndf {cfg.ndf} batch {cfg.batch_size} impl {impl} "
          f"precision {cfg.precision}; G {ours_counts[0]:,} D {ours_counts[1]:,} params (both); "
          f"torch threads {threads}; jax {jax.devices()[0].platform}", flush=True)
    peaks = work.cpu_peaks()
    print(f"CPU peak: measured {peaks['cpu_peak_flop_per_s_measured'] / 1e9:.1f} GFLOP/s "
          f"({peaks['cpu_peak_measured_by']}); theoretical "
          f"{(peaks['cpu_peak_flop_per_s_theoretical'] or float('nan')) / 1e9:.1f} GFLOP/s "
          f"({peaks['cpu_peak_theoretical_basis']})", flush=True)

    _, state, step_fn, masks, images = build_ours(cfg, impl, seed)
    compiled, compile_s = work.aot_compile(step_fn, state, masks, images)
    costs = work.compiled_costs(compiled)
    print(f"ours: train step {costs['flops'] / 1e9:.2f} GFLOP, peak {costs['peak_bytes'] / 2**20:.0f} MiB, "
          f"compiled in {compile_s:.1f} s", flush=True)
    available = work.available_memory_bytes()
    timed = available is None or costs["peak_bytes"] <= available
    box = {"state": state}

    def ours_step():
        box["state"], metrics = compiled(box["state"], masks, images)
        return metrics

    result = {
        "ours_steps_per_s": None, "peer_steps_per_s": None, "ratio": None,
        "peer_steps_per_s_by_threads": None,
    }
    peer_flops = None
    if timed:
        peer_step = torch_step_fn(g, d, cfg, seed)
        t0 = time.perf_counter()
        jax.block_until_ready(ours_step())
        print(f"first step: {time.perf_counter() - t0:.1f} s", flush=True)
        peer_flops = work.torch_flops(peer_step)  # the peer's warm-up step, counted
        peer_threads = work.peer_thread_counts(threads)
        ours, peer = [], {t: [] for t in peer_threads}
        for r in range(rounds):
            ours.append(work.rate(ours_step, steps, jax.block_until_ready))
            for t in peer_threads:
                torch.set_num_threads(t)
                peer[t].append(work.rate(peer_step, steps))
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
    else:
        print(f"not timed: the step needs {costs['peak_bytes'] / 2**30:.1f} GiB (XLA), "
              f"{available / 2**30:.1f} GiB are free", flush=True)
    result.update(image_size=size, ngf=cfg.ngf, ndf=cfg.ndf, batch_size=cfg.batch_size, impl=impl,
                  threads=threads, device=str(jax.devices()[0].platform))
    result.update({
        "timed": timed,
        "precision": cfg.precision,
        "params": int(sum(ours_counts)),
        "params_generator": int(ours_counts[0]),
        "params_discriminator": int(ours_counts[1]),
        "flops_per_step": costs["flops"],
        "flops_basis": work.FLOPS_BASIS,
        "peer_flops_per_step_torch_counter": peer_flops,
        "peak_bytes": costs["peak_bytes"],
        "peak_bytes_basis": work.PEAK_BYTES_BASIS,
        "memory": costs["memory"],
        "available_bytes": available,
        "compile_s": round(compile_s, 2),
        "compile_s_basis": "lower + compile of the train step (ahead of time), this machine",
        **work.work_report(costs["flops"], result["ours_steps_per_s"], result["peer_steps_per_s"], peaks),
        **peaks,
    })
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m billetjax.bench pix2pix", description=__doc__)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"),
                        help="config whose gan section is timed (merged over config.yaml)")
    parser.add_argument("--image-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--ngf", type=int, default=None, help="default: the config's")
    parser.add_argument("--ndf", type=int, default=None, help="default: the config's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per round and side")
    parser.add_argument("--impl", default=DEFAULT_IMPL, choices=["hybrid", "taps", "matmul", "phase", "lax"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    args = parser.parse_args(argv)
    cfg = TrainConfig.from_config(load_config(args.config)["gan"])
    overrides = {"image_size_px": args.image_size, "ngf": args.ngf, "ndf": args.ndf,
                 "batch_size": args.batch_size}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    result = run(cfg, args.rounds, args.steps, args.impl, args.threads)
    if result["timed"]:
        print(f"ours {result['ours_steps_per_s']:.2f} steps/s, peer (PyTorch eager, best thread count) "
              f"{result['peer_steps_per_s']:.2f} steps/s, ratio {result['ratio']:.2f}")
    print(json.dumps(result))
