"""The detector that travels: a trained detector's inference as a serialised StableHLO program
(`jax.export`) with its weights and a small JSON, run with JAX and numpy alone.

A reader directory (`results/detector/exp{e}/seed{s}/reader/`, written by
`billetjax.read.export.export_reader`) holds:

- `reader.json`: the categories (the user's ids and names), the input (size, batch, dtype), the
  preprocessing of new frames (fit, pixel cap, bit depth), the thresholds (the detector's and the
  reading's: score threshold, ID pattern, reject confidence), the code version, the platforms;
- `inference.stablehlo`: `jax.export`'s serialisation of `(weights..., images) -> detections`;
- `weights.npz`: the weights, in the program's argument order.

This module imports neither Flax, optax nor orbax (a test checks `sys.modules`), so a machine
that runs the reader needs JAX, numpy, OpenCV and Pillow, not the training stack.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

READER_JSON = "reader.json"
PROGRAM = "inference.stablehlo"
WEIGHTS = "weights.npz"
READER_FILES = (READER_JSON, PROGRAM, WEIGHTS)
FORMAT = "billetjax-reader"
FORMAT_VERSION = 1


@dataclass
class Reader:
    """A loaded reader: `detect` runs the exported program on squares the size it was made for."""

    path: Path
    meta: dict
    exported: object  # jax.export.Exported
    weights: list

    @property
    def size_px(self) -> int:
        return int(self.meta["input"]["size_px"])

    @property
    def batch_size(self) -> int:
        return int(self.meta["input"]["batch_size"])

    @property
    def categories(self) -> list[dict]:
        """The user's categories, `[{"id", "name"}]`, in the order of the detector's labels 1..K."""
        return self.meta["categories"]

    def __post_init__(self):
        self._call = jax.jit(self.exported.call)

    def launch(self, images: np.ndarray) -> tuple[int, dict]:
        """Start the program on up to `batch_size` squares uint8[n, S, S, 3] and return at once
        (JAX dispatches asynchronously); `fetch` waits for the detections."""
        images = np.asarray(images)
        n = len(images)
        if images.shape[1:] != (self.size_px, self.size_px, 3) or images.dtype != np.uint8:
            raise ValueError(f"{self.path}: the reader takes uint8[n, {self.size_px}, {self.size_px}, 3] squares, "
                             f"got {images.dtype}{list(images.shape)}")
        if not 0 < n <= self.batch_size:
            raise ValueError(f"{self.path}: a batch holds 1 to {self.batch_size} images, got {n}")
        if n < self.batch_size:  # the program's batch is fixed: pad with the last image
            images = np.concatenate([images, np.repeat(images[-1:], self.batch_size - n, axis=0)])
        return n, self._call(*self.weights, images)

    @staticmethod
    def fetch(launched: tuple[int, dict]) -> dict[str, np.ndarray]:
        """The detections of a `launch`: numpy arrays `[n, max_detections, ...]` (`boxes` [x1, y1,
        x2, y2] on the square, `scores`, `labels` 1..K, `valid`, `class_scores`)."""
        n, out = launched
        return {k: np.asarray(v)[:n] for k, v in jax.device_get(out).items()}

    def detect_batch(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Detections of up to `batch_size` squares (`launch`, then `fetch`)."""
        return self.fetch(self.launch(images))

    def detect(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """`detect_batch` over any number of squares, in batches."""
        parts = [self.detect_batch(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_reader(path: str | os.PathLike) -> Reader:
    """A reader directory (module docstring) loaded for `Reader.detect` / `billetjax.read.read_frames`;
    a missing or foreign file is refused naming it."""
    path = Path(path)
    missing = [name for name in READER_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: not a reader directory (missing {', '.join(missing)}); fix: export one "
                                "with `snakemake results/detector/exp{e}/seed{s}/reader/reader.json`")
    meta = json.loads((path / READER_JSON).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path / READER_JSON}: format {meta.get('format')!r} version {meta.get('format_version')!r}, "
                         f"this code reads {FORMAT!r} version {FORMAT_VERSION}; fix: export the reader again")
    backend = jax.default_backend()
    if not {"gpu": {"cuda", "rocm"}}.get(backend, {backend}) & set(meta["platforms"]):
        raise ValueError(f"{path}: exported for {meta['platforms']}, this machine runs JAX on {backend!r}; fix: "
                         "export the reader on (or for) this platform")
    exported = jax.export.deserialize(bytearray((path / PROGRAM).read_bytes()))
    with np.load(path / WEIGHTS) as npz:
        weights = [npz[f"w{i:05d}"] for i in range(len(npz.files))]
    return Reader(path, meta, exported, weights)
