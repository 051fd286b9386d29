"""`python -m billetjax.bench steps detector|pix2pix --config C --steps N`: N training steps of a
config's detector or pix2pix on synthetic data, without a peer; the detector's images have the
side its training steps see (`detector.augment.crop_px`, or `image_size_px`).

What a machine (a GPU above all) does with the config's model: the step is compiled ahead of
time once (`compile_s`), run N times, and the line reports steps/s and images/s over the steps
after the first, the first and last losses (a non-finite loss stops the run naming the step),
the parameters, the step's FLOPs and memory from XLA's analyses (`flops_per_step`,
`peak_bytes`) and, where the device reports it, the high-water mark of its allocated memory
(`device_peak_bytes_in_use`: GPUs do, the CPU does not). The last printed line is JSON.
The detector trains on one synthetic batch (`bench.detector.synthetic_batch`), pix2pix on
random device-resident pairs it draws its batches from, as in training.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace

import jax

from billetjax.bench import detector as bench_detector
from billetjax.bench import pix2pix as bench_pix2pix
from billetjax.bench import work
from billetjax.bench.work import ROOT, load_config
from billetjax.detector.spec import DetectorConfig, training_size_px
from billetjax.pix2pix.train import TrainConfig

MODELS = ("detector", "pix2pix")


def _check_finite(metrics: dict, step: int, model: str) -> dict:
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise FloatingPointError(f"{model} step {step} gave non-finite losses {values}")
    return values


def run_steps(model: str, config: dict, steps: int, batch_size: int | None = None) -> dict:
    """Compile and run `steps` (>= 2) training steps of `model` ("detector" or "pix2pix") as the
    validated `config` sets it up (`batch_size` overrides the config's); returns the line's dict."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if steps < 2:
        raise ValueError(f"steps = {steps}: need at least 2 (the first one is not timed)")
    if model == "detector":
        # The step as the config trains it: on `augment.crop_px` windows where it sets them.
        size = training_size_px(DetectorConfig.from_config(config["detector"]), config["image_size_px"])
        _, spec, fns, batch = bench_detector.build_ours(config, batch_size, size)
        state, key = fns.initial_state, jax.random.key(0)
        args = (batch, key, fns.anchors)
        compiled, compile_s = work.aot_compile(fns.train_step_fn, state, *args)
        batch_size = int(batch[0].shape[0])
        params = sum(x.size for x in jax.tree.leaves(state["params"]))
        loss_key, details = "loss", {"image_size_px": spec.image_size_px, "block": spec.model.block,
                                     "precision": spec.model.precision}
    else:
        cfg = TrainConfig.from_config(config["gan"])
        cfg = replace(cfg, batch_size=batch_size or cfg.batch_size)
        _, state, step_fn, masks, images = bench_pix2pix.build_ours(cfg)
        args = (masks, images)
        compiled, compile_s = work.aot_compile(step_fn, state, *args)
        batch_size = cfg.batch_size
        params = sum(x.size for k in ("g_params", "d_params") for x in jax.tree.leaves(state[k]))
        loss_key, details = "g_l1", {"image_size_px": cfg.image_size_px, "ngf": cfg.ngf, "ndf": cfg.ndf,
                                     "precision": cfg.precision}
    costs = work.compiled_costs(compiled)
    print(f"{model}: {params:,} parameters, {costs['flops'] / 1e9:.1f} GFLOP and "
          f"{costs['peak_bytes'] / 2**30:.2f} GiB per step (XLA), compiled in {compile_s:.1f} s", flush=True)

    t0 = time.perf_counter()
    state, metrics = compiled(state, *args)
    first = _check_finite(metrics, 1, model)
    first_step_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for step in range(2, steps + 1):
        state, metrics = compiled(state, *args)
    last = _check_finite(metrics, steps, model)
    seconds = time.perf_counter() - t0
    rate = (steps - 1) / seconds
    line = {
        "model": model,
        "steps": steps,
        "batch_size": batch_size,
        **details,
        "steps_per_s": round(rate, 4),
        "images_per_s": round(rate * batch_size, 3),
        "first_step_s": round(first_step_s, 3),
        "compile_s": round(compile_s, 2),
        f"first_{loss_key}": first[loss_key],
        f"last_{loss_key}": last[loss_key],
        "params": int(params),
        "flops_per_step": costs["flops"],
        "flop_per_s": work.as_int(costs["flops"] * rate) if costs["flops"] else None,
        "peak_bytes": costs["peak_bytes"],
        "peak_bytes_basis": work.PEAK_BYTES_BASIS,
        "device_peak_bytes_in_use": work.device_peak_bytes_in_use(),
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
    }
    return line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m billetjax.bench steps", description=__doc__)
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"),
                        help="config whose model is run (merged over config.yaml)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    args = parser.parse_args(argv)
    line = run_steps(args.model, load_config(args.config), args.steps, args.batch_size)
    print(f"{args.model}: {line['steps_per_s']:.2f} steps/s, {line['images_per_s']:.1f} images/s, "
          f"device peak {line['device_peak_bytes_in_use']} bytes in use", flush=True)
    print(json.dumps(line), flush=True)
