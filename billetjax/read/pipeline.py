"""Reading a folder of new frames with a reader: decode and fit each frame (`frames`), detect the
characters in batches (`reader`), bring the boxes back to the displayed frames, decode whole IDs
(`billetjax.evaluation.billet_id`), and write what the plant and its annotators use (`outputs`).

On an accelerator, frames are decoded on worker threads while the detector runs (OpenCV and
Pillow release the GIL); on a CPU, decoding and detection take turns (`decode_workers`). No Flax, optax or orbax here: the reader runs on its own.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from billetjax.data.importer import ImportOptions
from billetjax.read.frames import PreparedFrame, folder_bit_depth, frame_name, list_frames, prepare_frame
from billetjax.read.reader import Reader

log = logging.getLogger(__name__)

# Frames decoded ahead of the detector: two batches keep it fed without holding a folder in memory.
PREFETCH_BATCHES = 2


@dataclass(frozen=True)
class ReadOptions:
    """What the read stage takes from the config's `read` section (the rest is the reader's own).
    The defaults are the schema's, for reading without a config (a test holds them equal)."""

    lexicon: str | None = None  # CSV of expected IDs (docs/id-reading.md)
    gallery_frames: int = 6
    from_name: str = "label"
    to_name: str = "image"
    data_key: str = "image"
    image_root: str | None = None

    @classmethod
    def from_config(cls, read: dict) -> "ReadOptions":
        studio = read["label_studio"]
        return cls(lexicon=read["lexicon"], gallery_frames=int(read["gallery_frames"]),
                   from_name=studio["from_name"], to_name=studio["to_name"], data_key=studio["data_key"],
                   image_root=studio["image_root"])


@dataclass
class FrameReading:
    """One file's outcome: its preparation, its detections in the displayed frame, its ID reading."""

    frame: PreparedFrame
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # x1, y1, x2, y2, displayed frame
    square_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # the same on the square
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # index into categories
    class_scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    reading: dict = field(default_factory=dict)


def preprocessing_options(reader: Reader) -> ImportOptions:
    """The import's options for new frames, as the reader was exported with them."""
    pre = reader.meta["preprocessing"]
    return ImportOptions(size_px=reader.size_px, fit=pre["fit"], orientation="displayed",
                         bit_depth=pre["bit_depth"], max_pixels=int(pre["max_pixels"]))


class _Inline:
    """An executor that runs each task as it is submitted (decoding in the calling thread)."""

    def submit(self, fn, *args) -> Future:
        future = Future()
        future.set_result(fn(*args))
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def decode_workers() -> int:
    """Threads that decode frames while the detector runs: none on a CPU, where the detector's
    program already uses every core and decoding beside it slows it more than it saves (the
    read benchmark measured it), two where it runs on an accelerator."""
    import jax

    return 0 if jax.default_backend() == "cpu" else 2


def detect_frames(reader: Reader, images: str | os.PathLike | list, workers: int | None = None,
                  timings: dict | None = None, keep_squares: bool = False) -> tuple[Path, list[FrameReading]]:
    """`(root, readings)` of every file of a folder (or of the files given), in file order, with
    detections (all the detector keeps) in the displayed frames; no ID decoding yet.

    timings: where given, filled with the seconds spent waiting for decoding and for the detector;
    keep_squares: keep each frame's square (the detector's input) on its `PreparedFrame`;
    workers: decoding threads (0: decode and detect in turn); None: `decode_workers()`."""
    workers = decode_workers() if workers is None else int(workers)
    root, files = list_frames(images)
    opts = preprocessing_options(reader)
    bits = folder_bit_depth(files, opts)
    names = [frame_name(root, f) for f in files]
    readings: list[FrameReading] = []
    waiting, inferring = 0.0, 0.0
    pending: list[PreparedFrame] = []

    inflight: list = []  # (frames, launched) of the batch the detector is running

    def finish():
        """Wait for the batch in flight and keep its detections, in the displayed frames."""
        nonlocal inferring
        if not inflight:
            return
        batch, launched = inflight.pop()
        t0 = time.perf_counter()
        dets = reader.fetch(launched)
        inferring += time.perf_counter() - t0
        for i, prepared in enumerate(batch):
            keep = np.flatnonzero(dets["valid"][i])
            square = dets["boxes"][i, keep].astype(np.float64)
            boxes = prepared.frame_map.to_original(square)
            # A box wholly in the padding has no area left in the frame: it found nothing there.
            inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            keep, square, boxes = keep[inside], square[inside], boxes[inside]
            readings[index_of[id(prepared)]] = FrameReading(
                prepared, boxes, square, dets["scores"][i, keep].astype(np.float64),
                dets["labels"][i, keep].astype(np.int64) - 1, dets["class_scores"][i, keep].astype(np.float64))

    def flush():
        """Start the detector on the pending frames, then finish the batch before (which ran
        while these were decoded)."""
        nonlocal inferring
        t0 = time.perf_counter()
        launched = reader.launch(np.stack([p.square for p in pending]))
        inferring += time.perf_counter() - t0
        finish()
        inflight.append((list(pending), launched))
        pending.clear()
        if not workers:  # in turn: nothing decodes while the detector runs
            finish()

    index_of: dict[int, int] = {}
    with (ThreadPoolExecutor(max_workers=workers) if workers else _Inline()) as pool:
        queued = deque()
        todo = iter(zip(files, names))
        ahead = PREFETCH_BATCHES * reader.batch_size
        for file, name in islice(todo, ahead):
            queued.append(pool.submit(prepare_frame, file, name, opts, bits))
        while queued:
            t0 = time.perf_counter()
            prepared = queued.popleft().result()
            waiting += time.perf_counter() - t0
            for file, name in islice(todo, 1):  # keep `ahead` frames decoding
                queued.append(pool.submit(prepare_frame, file, name, opts, bits))
            readings.append(FrameReading(prepared))
            if prepared.status != "read":
                log.warning("%s: %s", prepared.name, prepared.message)
                continue
            index_of[id(prepared)] = len(readings) - 1
            pending.append(prepared)
            if len(pending) == reader.batch_size:
                flush()
        if pending:
            flush()
        finish()
    if not keep_squares:
        for r in readings:
            r.frame.square = None
    if timings is not None:
        timings.update(decode_wait_s=waiting, detector_wait_s=inferring)
    n_read = sum(r.frame.status == "read" for r in readings)
    log.info("%s: %d files, %d read, %d not (%s)", root, len(readings), n_read, len(readings) - n_read,
             ", ".join(sorted({r.frame.status for r in readings if r.frame.status != "read"})) or "none")
    return root, readings


def read_frames(reader: Reader, images: str | os.PathLike | list, out_dir: str | os.PathLike,
                options: ReadOptions | None = None, gallery: bool = True) -> dict[str, Path]:
    """Read every frame of a folder (or the files given) and write `billetjax.read.outputs`'s
    files into `out_dir`; their paths. A file that cannot be read keeps its row with its status."""
    from billetjax.read.outputs import write_outputs

    root, readings = detect_frames(reader, images)
    return write_outputs(readings, reader, options or ReadOptions(), out_dir, root, gallery=gallery)
