"""Benchmark: our jitted Faster R-CNN training step against torchvision's `FasterRCNN` (eager).

Both sides build the same detector from the config's `detector` section (validated against the
schema, so its defaults apply; `--config` is merged over config.yaml as `snakemake --configfile`
does): the ResNet-style backbone (same widths, blocks, block type, GroupNorm), FPN, anchors (sizes
and ratios on the same levels), RPN and RoI counts, RoIAlign on the finest level, the two-layer box
head; the same image size, batch and synthetic batch of character-sized boxes; SGD with momentum;
with `detector.precision: bfloat16` ours computes in bfloat16 and the peer runs under
`torch.autocast(bfloat16)`. Rounds alternate between the two so that a shared, noisy machine
slows both alike; we report medians over rounds, then inference images/s, the peer's at its best
thread count (all cores, or one).

Beside the speed, the work (`billetjax.bench.work`): our step is compiled ahead of time once, and
its FLOPs (XLA's cost analysis), memory (XLA's memory analysis: `peak_bytes`), parameter count
and compile time are reported with the achieved FLOP/s of both sides (one FLOP count for the same
work; the peer's own count from `torch.utils.flop_counter` beside it) and their fractions of the
CPU's measured and theoretical peak. When the compiled step needs more memory than the machine
has free, the steps are not run: the line then carries the analysis and no speeds.

The last printed line is JSON: {"ours_steps_per_s", "peer_steps_per_s", "ratio", ...,
"params", "flops_per_step", "peak_bytes", "compile_s", ...}.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from contextlib import nullcontext

import jax
import numpy as np

from billetjax.bench import work
from billetjax.bench.work import ROOT, load_config  # noqa: F401 (the benchmark's config loader)
from billetjax.detector.geometry import BOTTLENECK_EXPANSION
from billetjax.detector.spec import DetectorConfig, make_spec
from billetjax.detector.train import Functions, make_optimizer

# The synthetic boxes' heights at 256 px; scaled with the image size (as synth.embed.char_height_px).
BOX_HEIGHTS_PX = (18, 30)
BOX_HEIGHTS_AT_PX = 256
NUM_CLASSES = 10


def synthetic_batch(rng: np.random.Generator, batch: int, size: int, max_boxes: int, num_classes: int):
    """Random images with 8-12 character-sized boxes each (heights 18-30 px at 256 px, scaled with
    the image; h/w about 1.7)."""
    images = rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    boxes = np.zeros((batch, max_boxes, 4), np.float32)
    labels = np.zeros((batch, max_boxes), np.int32)
    valid = np.zeros((batch, max_boxes), bool)
    low, high = (h * size / BOX_HEIGHTS_AT_PX for h in BOX_HEIGHTS_PX)
    for i in range(batch):
        n = int(rng.integers(8, min(12, max_boxes) + 1))
        h = rng.uniform(low, high, n)
        w = h / rng.uniform(1.4, 2.0, n)
        x = rng.uniform(0, size - w)
        y = rng.uniform(0, size - h)
        boxes[i, :n] = np.stack([x, y, x + w, y + h], 1)
        labels[i, :n] = rng.integers(1, num_classes + 1, n)
        valid[i, :n] = True
    return images, boxes, labels, valid


def build_torch_detector(spec):
    """torchvision FasterRCNN with our backbone/FPN/head shapes and our spec's counts."""
    from collections import OrderedDict

    import torch.nn as nn
    import torch.nn.functional as F
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

    m = spec.model

    def norm(c):
        return nn.GroupNorm(min(m.groups, c), c)

    def projection(cin, cout, stride):
        """A block's projection shortcut when it changes the shape, else None (the identity)."""
        if stride == 1 and cin == cout:
            return None
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.norm1 = norm(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.norm2 = norm(cout)
            self.proj = projection(cin, cout, stride)

        def forward(self, x):
            y = F.relu(self.norm1(self.conv1(x)))
            y = self.norm2(self.conv2(y))
            return F.relu(y + (x if self.proj is None else self.proj(x)))

    class Bottleneck(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            mid = cout // BOTTLENECK_EXPANSION
            self.conv1 = nn.Conv2d(cin, mid, 1, 1, 0, bias=False)
            self.norm1 = norm(mid)
            self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
            self.norm2 = norm(mid)
            self.conv3 = nn.Conv2d(mid, cout, 1, 1, 0, bias=False)
            self.norm3 = norm(cout)
            self.proj = projection(cin, cout, stride)

        def forward(self, x):
            y = F.relu(self.norm1(self.conv1(x)))
            y = F.relu(self.norm2(self.conv2(y)))
            y = self.norm3(self.conv3(y))
            return F.relu(y + (x if self.proj is None else self.proj(x)))

    block_type = {"basic": Block, "bottleneck": Bottleneck}[m.block]

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            if m.stem == "space_to_depth":  # 4x4 tiles to channels, one 3x3 conv at stride 4
                self.stem = nn.Sequential(
                    nn.PixelUnshuffle(4), nn.Conv2d(48, m.stem_width, 3, 1, 1, bias=False),
                    norm(m.stem_width), nn.ReLU())
            else:
                self.stem = nn.Sequential(
                    nn.Conv2d(3, m.stem_width, 3, 2, 1, bias=False), norm(m.stem_width), nn.ReLU(),
                    nn.Conv2d(m.stem_width, m.stem_width, 3, 2, 1, bias=False), norm(m.stem_width), nn.ReLU())
            stages, cin = [], m.stem_width
            for i, (width, n) in enumerate(zip(m.widths, m.blocks)):
                blocks = []
                for j in range(n):
                    blocks.append(block_type(cin, width, 2 if (i > 0 and j == 0) else 1))
                    cin = width
                stages.append(nn.Sequential(*blocks))
            self.stages = nn.ModuleList(stages)
            # torchvision's FPN: 1x1 laterals, nearest-neighbour top-down, 3x3 outputs (as ours).
            self.fpn = FeaturePyramidNetwork(list(m.widths), m.fpn_width)
            self.out_channels = m.fpn_width

        def forward(self, x):
            x = self.stem(x)
            feats = OrderedDict()
            for i, stage in enumerate(self.stages):
                x = stage(x)
                feats[str(i)] = x
            out = self.fpn(feats)
            return OrderedDict((k, out[k]) for k in list(out)[: m.anchor_levels])

    anchor_gen = AnchorGenerator(sizes=tuple(tuple(s) for s in spec.anchor_sizes),
                                 aspect_ratios=(tuple(spec.aspect_ratios),) * m.anchor_levels)
    rpn, roi = spec.rpn, spec.roi
    return FasterRCNN(
        Backbone(), num_classes=None, min_size=spec.image_size_px, max_size=spec.image_size_px,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        rpn_anchor_generator=anchor_gen,
        rpn_pre_nms_top_n_train=rpn.pre_nms_top_n_train, rpn_post_nms_top_n_train=rpn.post_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn.pre_nms_top_n_test, rpn_post_nms_top_n_test=rpn.post_nms_top_n_test,
        rpn_nms_thresh=rpn.nms_iou, rpn_fg_iou_thresh=rpn.fg_iou, rpn_bg_iou_thresh=rpn.bg_iou,
        rpn_batch_size_per_image=rpn.batch_size_per_image, rpn_positive_fraction=rpn.positive_fraction,
        box_roi_pool=MultiScaleRoIAlign(["0"], m.pool_size, roi.sampling_ratio),
        box_head=TwoMLPHead(m.fpn_width * m.pool_size**2, m.head_width),
        box_predictor=FastRCNNPredictor(m.head_width, m.num_classes + 1),
        box_score_thresh=spec.inference.score_threshold, box_nms_thresh=spec.inference.nms_iou,
        box_detections_per_img=spec.inference.max_detections,
        box_fg_iou_thresh=roi.fg_iou, box_bg_iou_thresh=roi.bg_iou,
        box_batch_size_per_image=roi.batch_size_per_image, box_positive_fraction=roi.positive_fraction,
    )


def build_ours(config: dict, batch: int | None = None, size: int | None = None, seed: int = 0):
    """Our detector of a validated config on a synthetic batch: `(cfg, spec, fns, batch_arrays)`;
    `batch` and `size` default to the config's `detector.batch_size` and `image_size_px`."""
    cfg = DetectorConfig.from_config(config["detector"])
    size = int(size or config["image_size_px"])
    batch = int(batch or cfg.batch_size)
    rng = np.random.default_rng(seed)
    images, boxes, labels, valid = synthetic_batch(rng, batch, size, cfg.max_boxes, NUM_CLASSES)
    b = boxes[valid]
    spec, _ = make_spec(cfg, size, tuple(range(1, NUM_CLASSES + 1)),
                        np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1))
    optimizer, schedule = make_optimizer(cfg)
    fns = Functions(spec, optimizer, schedule, seed=seed)
    return cfg, spec, fns, tuple(jax.device_put(a) for a in (images, boxes, labels, valid))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rounded(value, digits):
    return None if value is None else round(value, digits)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m billetjax.bench detector", description=__doc__)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"),
                        help="config whose detector section is timed (merged over config.yaml)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="training steps per round and side")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--image-size", type=int, default=None, help="default: the config's")
    args = parser.parse_args(argv)

    import torch

    config = load_config(args.config)
    cfg, spec, fns, batch_arrays = build_ours(config, args.batch_size, args.image_size)
    size, batch = spec.image_size_px, int(batch_arrays[0].shape[0])
    images, boxes, labels, valid = (np.array(a) for a in batch_arrays)  # writable, for torch
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), torch threads "
          f"{torch.get_num_threads()}, image {size} px, batch {batch}", flush=True)
    print(f"model: {spec.model}", flush=True)
    peaks = work.cpu_peaks()
    print(f"CPU peak: measured {peaks['cpu_peak_flop_per_s_measured'] / 1e9:.1f} GFLOP/s "
          f"({peaks['cpu_peak_measured_by']}); theoretical "
          f"{(peaks['cpu_peak_flop_per_s_theoretical'] or float('nan')) / 1e9:.1f} GFLOP/s "
          f"({peaks['cpu_peak_theoretical_basis']})", flush=True)

    # ours: compiled once, ahead of time; the compiled programs are the ones timed
    state = fns.initial_state
    key = jax.random.key(0)
    n_ours = sum(x.size for x in jax.tree.leaves(state["params"]))
    train_step, compile_s = work.aot_compile(fns.train_step_fn, state, batch_arrays, key, fns.anchors)
    predict, predict_compile_s = work.aot_compile(fns.predict_fn, state["params"], batch_arrays[0],
                                                  fns.anchors)
    costs, predict_costs = work.compiled_costs(train_step), work.compiled_costs(predict)
    print(f"ours: {n_ours:,} parameters; train step {costs['flops'] / 1e9:.1f} GFLOP, peak "
          f"{costs['peak_bytes'] / 2**30:.2f} GiB, compiled in {compile_s:.1f} s; inference "
          f"{predict_costs['flops'] / 1e9:.1f} GFLOP per batch, compiled in {predict_compile_s:.1f} s",
          flush=True)
    available = work.available_memory_bytes()
    timed = available is None or costs["peak_bytes"] <= available
    result = {}
    if timed:
        result = _time_both(args, spec, train_step, predict, state, batch_arrays, key, fns.anchors,
                            images, boxes, labels, valid, torch)
    else:
        print(f"not timed: the step needs {costs['peak_bytes'] / 2**30:.1f} GiB (XLA), "
              f"{available / 2**30:.1f} GiB are free; --batch-size 1 times it here", flush=True)
    ours, peer_rate = result.get("ours"), result.get("peer")
    ours_inf, peer_inf = result.get("ours_inf"), result.get("peer_inf")
    line = {
        "ours_steps_per_s": _rounded(ours, 4),
        "peer_steps_per_s": _rounded(peer_rate, 4),
        "ratio": round(ours / peer_rate, 3) if timed else None,
        "ours_inference_images_per_s": _rounded(ours_inf, 2),
        "peer_inference_images_per_s": _rounded(peer_inf, 2),
        "peer_steps_per_s_by_threads": result.get("peer_by_threads"),
        "peer_inference_images_per_s_by_threads": result.get("peer_inf_by_threads"),
        "ours_compile_s": _rounded(result.get("first_step_s", 0) + compile_s if timed else None, 2),
        "ours_predict_compile_s": round(predict_compile_s, 2),
        "peak_rss_mib_after_ours": _rounded(result.get("rss_ours"), 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "batch_size": batch,
        "image_size_px": size,
        "rounds": args.rounds,
        "device": jax.devices()[0].device_kind,
        "timed": timed,
        "precision": spec.model.precision,
        "block": spec.model.block,
        "params": int(n_ours),
        "peer_params": result.get("n_peer"),
        "flops_per_step": costs["flops"],
        "flops_basis": work.FLOPS_BASIS,
        "peer_flops_per_step_torch_counter": result.get("peer_flops"),
        "inference_flops_per_batch": predict_costs["flops"],
        "peak_bytes": costs["peak_bytes"],
        "peak_bytes_basis": work.PEAK_BYTES_BASIS,
        "memory": costs["memory"],
        "inference_peak_bytes": predict_costs["peak_bytes"],
        "available_bytes": available,
        "compile_s": round(compile_s, 2),
        "compile_s_basis": "lower + compile of the train step (ahead of time), this machine",
        **work.work_report(costs["flops"], ours, peer_rate, peaks),
        **work.work_report(predict_costs["flops"], ours_inf and ours_inf / batch,
                           peer_inf and peer_inf / batch, peaks, prefix="inference_"),
        **peaks,
    }
    print(json.dumps(line), flush=True)


def _time_both(args, spec, train_step, predict, state, batch_arrays, key, anchors,
               images, boxes, labels, valid, torch) -> dict:
    """Time our compiled step and the peer in alternating rounds; medians, inference rates,
    the first step's time, the peer's parameter and FLOP counts."""
    batch = images.shape[0]
    t0 = time.perf_counter()
    state, metrics = train_step(state, batch_arrays, key, anchors)
    jax.block_until_ready(metrics["loss"])
    first_step_s = time.perf_counter() - t0
    jax.block_until_ready(predict(state["params"], batch_arrays[0], anchors))
    rss_ours = _peak_rss_mib()

    # peer
    torch.manual_seed(0)
    peer = build_torch_detector(spec)
    peer.train()
    opt = torch.optim.SGD(peer.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    t_images = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
    t_targets = [{"boxes": torch.from_numpy(boxes[i][valid[i]]),
                  "labels": torch.from_numpy(labels[i][valid[i]]).long()} for i in range(batch)]
    n_peer = sum(p.numel() for p in peer.parameters())
    print(f"parameters: ours {sum(x.size for x in jax.tree.leaves(state['params']))}, peer {n_peer}",
          flush=True)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) \
        if spec.model.precision == "bfloat16" else nullcontext

    def peer_step():
        with autocast():
            losses = peer(t_images, t_targets)
            loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    peer_flops = work.torch_flops(peer_step)  # the warm-up step, counted

    cores = torch.get_num_threads()
    peer_threads = work.peer_thread_counts(cores)
    ours_rates, peer_rates = [], {t: [] for t in peer_threads}
    for r in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = train_step(state, batch_arrays, key, anchors)
        jax.block_until_ready(metrics["loss"])
        ours_rates.append(args.steps / (time.perf_counter() - t0))
        for t in peer_threads:
            torch.set_num_threads(t)
            peer_rates[t].append(work.rate(peer_step, args.steps))
        print(f"round {r + 1}: ours {ours_rates[-1]:.3f} steps/s, peer "
              + ", ".join(f"{peer_rates[t][-1]:.3f} steps/s ({t} threads)" for t in peer_threads),
              flush=True)

    # inference, interleaved as well
    peer.eval()
    ours_inf, peer_inf = [], {t: [] for t in peer_threads}
    for _ in range(max(args.rounds // 2, 2)):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            out = predict(state["params"], batch_arrays[0], anchors)
        jax.block_until_ready(out)
        ours_inf.append(args.steps * batch / (time.perf_counter() - t0))
        for t in peer_threads:
            torch.set_num_threads(t)
            with torch.no_grad(), autocast():
                peer_inf[t].append(batch * work.rate(lambda: peer(t_images), args.steps))
    torch.set_num_threads(cores)
    peer_by_threads = {t: statistics.median(v) for t, v in peer_rates.items()}
    peer_inf_by_threads = {t: statistics.median(v) for t, v in peer_inf.items()}
    return {"ours": statistics.median(ours_rates), "peer": max(peer_by_threads.values()),
            "ours_inf": statistics.median(ours_inf), "peer_inf": max(peer_inf_by_threads.values()),
            "peer_by_threads": {str(t): round(v, 4) for t, v in peer_by_threads.items()},
            "peer_inf_by_threads": {str(t): round(v, 2) for t, v in peer_inf_by_threads.items()},
            "first_step_s": first_step_s, "rss_ours": rss_ours, "n_peer": int(n_peer),
            "peer_flops": peer_flops}


if __name__ == "__main__":
    main()
