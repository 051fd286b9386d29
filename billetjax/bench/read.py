"""Benchmark: reading a folder of camera frames end to end against the detector's inference alone.

A detector of the config's shape (random weights: the work per image does not depend on them) is
exported as a reader; a folder of 640 x 360 JPEG frames is written. In alternating rounds (a
shared, noisy machine slows both alike) we time

- inference: the in-process jitted detector on full batches already in memory, as
  `python -m billetjax.bench detector` times it (its `ours_inference_images_per_s`);
- reading: `billetjax.read.read_frames` on the folder: listing, decoding (EXIF, bit depth),
  fitting to the square, the exported reader's inference, mapping the boxes back, ID decoding and
  writing every output file (the gallery included), with decoding as `read_frames` does it
  (`decode_workers`: in turn with the detector on a CPU, on threads beside it on an accelerator)
  and the other way, for comparison,

and report medians and their ratio (the goal: reading at 80 % or more of the inference rate),
with the phases of the last reading round. The last printed line is JSON:
{"read_images_per_s", "inference_images_per_s", "ratio", "reader_inference_images_per_s", ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import jax
import numpy as np

from billetjax import coco as cc
from billetjax.bench.work import ROOT, load_config

FRAME_SIZE = (640, 360)


def write_frames(folder: Path, n: int, seed: int = 0) -> None:
    """`n` 640 x 360 JPEG frames: a textured grey face with a two-row ID stamped in dark digits."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = FRAME_SIZE
    for i in range(n):
        grey = rng.normal(120, 12, (h // 8, w // 8)).astype(np.float32)
        face = cv2.resize(grey, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 4, (h, w))
        image = np.clip(face, 0, 255).astype(np.uint8)
        for row, y in enumerate((h // 2 - 20, h // 2 + 45)):
            text = "".join(str(d) for d in rng.integers(0, 10, 6 - row))
            cv2.putText(image, text, (w // 2 - 110, y), cv2.FONT_HERSHEY_SIMPLEX, 1.6, 40, 4, cv2.LINE_AA)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        (folder / f"frame{i:04d}.jpg").write_bytes(data.tobytes())


def build_detector(config: dict, folder: Path):
    """A random-weights detector of the config's shape, saved; `(params path, train json, spec)`."""
    from flax import nnx

    from billetjax.detector.models import FasterRCNN
    from billetjax.detector.spec import DetectorConfig, make_spec, save_params

    size = int(config["image_size_px"])
    rng = np.random.default_rng(0)
    heights = rng.uniform(18, 30, 64) * size / 256
    boxes = np.stack([rng.uniform(0, size / 2, 64), rng.uniform(0, size / 2, 64), heights / 1.7, heights], 1)
    spec, _ = make_spec(DetectorConfig.from_config(config["detector"]), size, tuple(range(1, 11)), boxes)
    model = FasterRCNN(spec.model, nnx.Rngs(0))
    params = folder / "params.msgpack"
    save_params(params, spec, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    train = folder / "train.json"
    cc.save(train, cc.empty_dataset([{"id": i + 1, "name": str(i)} for i in range(10)]))
    return params, train, spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m billetjax.bench read", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"),
                        help="config whose detector is timed (merged over config.yaml)")
    parser.add_argument("--frames", type=int, default=64, help="frames in the folder read")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from billetjax.detector.predict import load_detector, make_predict_fn
    from billetjax.read import ReadOptions, detect_frames, load_reader
    from billetjax.read.pipeline import decode_workers
    from billetjax.read.export import export_reader
    from billetjax.read.outputs import write_outputs

    config = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        tmp = Path(tmp)
        params, train, spec = build_detector(config, tmp)
        t0 = time.perf_counter()
        export_reader(params, train, tmp / "reader", config)
        export_s = time.perf_counter() - t0
        frames = tmp / "frames"
        write_frames(frames, args.frames)
        reader = load_reader(tmp / "reader")
        batch, size = reader.batch_size, reader.size_px
        print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), image {size} px, batch {batch}, "
              f"{args.frames} frames of {FRAME_SIZE[0]}x{FRAME_SIZE[1]} JPEG", flush=True)

        _, graphdef, weights = load_detector(params)
        predict = make_predict_fn(spec, graphdef)
        rng = np.random.default_rng(1)
        images = rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        jax.block_until_ready(predict(weights, images))
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        reader.detect_batch(images)
        reader_compile_s = time.perf_counter() - t0
        steps = max(1, args.frames // batch)

        # the default (decode_workers: in turn on a CPU, threads on an accelerator) and the other way
        default = decode_workers()
        modes = {"default": default, "threads" if default == 0 else "in_turn": 2 if default == 0 else 0}
        inference, reader_inference, phases = [], [], {}
        reading = {m: [] for m in modes}
        for r in range(args.rounds):
            t0 = time.perf_counter()
            for _ in range(steps):
                out = predict(weights, images)
            jax.block_until_ready(out)
            inference.append(steps * batch / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for _ in range(steps):
                reader.detect_batch(images)
            reader_inference.append(steps * batch / (time.perf_counter() - t0))
            for mode, workers in modes.items():
                timings: dict = {}
                t0 = time.perf_counter()
                root, readings = detect_frames(reader, frames, workers=workers, timings=timings)
                t1 = time.perf_counter()
                write_outputs(readings, reader, ReadOptions.from_config(config["read"]), tmp / "out", root)
                t2 = time.perf_counter()
                reading[mode].append(args.frames / (t2 - t0))
                phases[mode] = {"detect_loop_s": round(t1 - t0, 3),
                                "waiting_for_decode_s": round(timings["decode_wait_s"], 3),
                                "waiting_for_detector_s": round(timings["detector_wait_s"], 3),
                                "postprocess_and_write_s": round(t2 - t1, 3)}
            print(f"round {r + 1}: inference {inference[-1]:.2f} images/s, exported reader {reader_inference[-1]:.2f}, "
                  "reading end to end " + ", ".join(f"{reading[m][-1]:.2f} ({m})" for m in modes), flush=True)
    inf, rinf = statistics.median(inference), statistics.median(reader_inference)
    rd = {m: statistics.median(v) for m, v in reading.items()}
    other = next(m for m in modes if m != "default")
    line = {
        "read_images_per_s": round(rd["default"], 2),
        "inference_images_per_s": round(inf, 2),
        "ratio": round(rd["default"] / inf, 3),
        "decode_workers": default,
        f"read_images_per_s_{other}": round(rd[other], 2),
        f"ratio_{other}": round(rd[other] / inf, 3),
        "reader_inference_images_per_s": round(rinf, 2),
        "reader_to_inference_ratio": round(rinf / inf, 3),
        "frames": args.frames,
        "frame": f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]} JPEG",
        "image_size_px": size,
        "batch_size": batch,
        "rounds": args.rounds,
        "phases_last_round": phases,  # per mode
        "inference_compile_s": round(compile_s, 2),
        "reader_compile_s": round(reader_compile_s, 2),
        "export_s": round(export_s, 2),
        "device": jax.devices()[0].device_kind,
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
