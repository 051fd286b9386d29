"""New camera frames brought to the detector's input, and its boxes brought back to the frames.

A frame gets the import's own preprocessing (`billetjax.data.importer`): a complete decode (a
truncated file is refused), 16-bit samples to 8 bits by the folder's bit depth, the EXIF
orientation applied (the displayed frame), the pixel cap, and `fit` (pad or crop) to the square
the detector was trained on. `FrameMap` keeps the geometry, so every box found on the square is
given in the displayed frame's pixels (COCO's convention: pixel edges, x right, y down).
A file that cannot be used gets a status that says why (the importer's `FRAME_PROBLEMS`: empty,
too_large, corrupt, unsupported; a usable one: read) and is never dropped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from billetjax.data.importer import (
    FrameError,
    ImportOptions,
    data_set_bit_depth,
    decode_frame,
    fit_square,
)

log = logging.getLogger(__name__)

class ReadError(ValueError):
    """Input the reader refuses as a whole (no folder, no files); the message names it and the fix."""


@dataclass(frozen=True)
class FrameMap:
    """Where the square the detector saw lies in the displayed frame: x_square = x * scale + dx."""

    width: int  # of the displayed (upright) frame
    height: int
    scale: float
    dx: float
    dy: float
    orientation: int  # the EXIF orientation applied (1: none)

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """float[N, 4] boxes `[x1, y1, x2, y2]` on the square, in the displayed frame's pixels,
        clipped to the frame (a box reaching into the padding ends at the frame's edge)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = (boxes - np.array([self.dx, self.dy, self.dx, self.dy])) / self.scale
        return np.clip(out, 0.0, np.array([self.width, self.height, self.width, self.height], dtype=np.float64))


@dataclass
class PreparedFrame:
    """One file of the folder: the square for the detector and its map, or the reason it has none."""

    file: Path
    name: str  # the file's path relative to the folder read (its name in every output)
    status: str
    message: str = ""
    square: np.ndarray | None = None  # uint8[S, S, 3]
    frame_map: FrameMap | None = None


def list_frames(images: str | os.PathLike | list) -> tuple[Path, list[Path]]:
    """`(root, files)`: every file of a folder (recursively, hidden ones left out, sorted) or the
    files given, each to be read and reported; a folder without files is refused."""
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        root = Path(images)
        files = sorted(p for p in root.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            raise ReadError(f"{root}: no image files in this folder (read.images); fix: point read.images at "
                            "the folder the camera frames are in")
        return root, files
    paths = [Path(p) for p in ([images] if isinstance(images, (str, os.PathLike)) else images)]
    if not paths:
        raise ReadError("no images given; fix: name a folder of frames or the frame files")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ReadError(f"{missing[0]}: no such file{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}"
                        "; fix: name existing frame files or a folder")
    root = Path(os.path.commonpath([p.resolve().parent for p in paths]))
    return root, paths


def frame_name(root: Path, file: Path) -> str:
    """A file's name in the outputs: its path relative to the folder read, with '/'."""
    try:
        return file.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return file.as_posix()


def prepare_frame(file: Path, name: str, opts: ImportOptions, bit_depth: int | None) -> PreparedFrame:
    """Decode and fit one file (the import's preprocessing); a file that cannot be used comes back
    with its status and message instead of pixels."""
    try:
        frame = decode_frame(file, opts, bit_depth)
    except FrameError as err:
        return PreparedFrame(file, name, err.reason, str(err))
    except OSError as err:  # vanished or unreadable between listing and reading
        return PreparedFrame(file, name, "corrupt", f"{file}: cannot be read ({err})")
    height, width = frame.pixels.shape[:2]
    square, scale, dx, dy = fit_square(frame.pixels, opts.size_px, opts.fit)
    return PreparedFrame(file, name, "read", "", square, FrameMap(width, height, scale, dx, dy, frame.orientation))


def folder_bit_depth(files: list[Path], opts: ImportOptions) -> int | None:
    """The one bit depth of the folder's 16-bit frames (as the import takes it for a data set)."""
    readable = [f for f in files if f.stat().st_size > 0]
    try:
        return data_set_bit_depth(readable, opts)
    except (OSError, ValueError) as err:  # the frame's own decode names a bad file
        log.warning("16-bit depth not taken from the folder (%s); each frame's own is used", err)
        return opts.bit_depth
