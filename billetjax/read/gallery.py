"""The gallery of the least certain readings: the frames at the top of `to_label_first.csv`,
displayed upright with their characters boxed (the weakest in red) and their reading.

Drawn with OpenCV, not matplotlib: it is written on every read of a folder, and a figure's
fixed cost (most of a second) would be a large part of reading a small folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from billetjax.data.importer import decode_frame
from billetjax.read.pipeline import FrameReading, preprocessing_options
from billetjax.read.reader import Reader
from billetjax.files import atomic_write_bytes

log = logging.getLogger(__name__)
COLUMNS = 3
TILE_WIDTH_PX = 480
CAPTION_PX = 44
GREEN, RED, WHITE, DARK = (60, 220, 60), (235, 40, 40), (255, 255, 255), (30, 30, 30)  # RGB
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _tile(r: FrameReading, reader: Reader, threshold: float) -> np.ndarray:
    """One frame at TILE_WIDTH_PX wide with its characters and a caption of its reading."""
    pixels = decode_frame(r.frame.file, preprocessing_options(reader)).pixels
    scale = TILE_WIDTH_PX / pixels.shape[1]
    image = cv2.resize(pixels, (TILE_WIDTH_PX, max(1, round(pixels.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    keep = np.flatnonzero(r.scores >= threshold)
    weakest = keep[np.argmin(r.scores[keep])] if len(keep) else -1
    for j in keep:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in r.boxes[j])
        colour = RED if j == weakest else GREEN
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 1)
        cv2.putText(image, f"{reader.categories[r.labels[j]]['name']} {r.scores[j]:.2f}", (x1, max(8, y1 - 2)), FONT,
                    0.33, colour, 1, cv2.LINE_AA)
    g = r.reading
    weakest_txt = f"{g['min_score']:.2f}" if g["min_score"] is not None else "-"
    valid = {True: ", valid", False: ", fails pattern", None: ""}[g["id_valid"]]
    caption = np.full((CAPTION_PX, TILE_WIDTH_PX, 3), DARK, np.uint8)
    cv2.putText(caption, r.frame.name[-60:], (4, 16), FONT, 0.42, WHITE, 1, cv2.LINE_AA)
    cv2.putText(caption, f"'{g['billet_id']}' ({g['decoder']}{valid}) conf {g['confidence']:.2f}, weakest "
                f"{weakest_txt}", (4, 36), FONT, 0.42, WHITE, 1, cv2.LINE_AA)
    return np.vstack([caption, image])


def least_certain_gallery(readings: list[FrameReading], ranking: list[dict], reader: Reader, frames: int,
                          out_path: str | os.PathLike) -> None:
    """Draw the first `frames` frames of the ranking that were read as a PNG grid (a tile saying
    so when none was)."""
    by_name = {r.frame.name: r for r in readings}
    shown = [by_name[row["file"]] for row in ranking if row["status"] == "read"][:frames]
    threshold = float(reader.meta["reading"]["score_threshold"])
    tiles = [_tile(r, reader, threshold) for r in shown]
    if not tiles:
        tile = np.full((CAPTION_PX, TILE_WIDTH_PX, 3), DARK, np.uint8)
        cv2.putText(tile, "no frame was read", (4, 26), FONT, 0.5, WHITE, 1, cv2.LINE_AA)
        tiles = [tile]
    height = max(t.shape[0] for t in tiles)
    tiles = [np.vstack([t, np.full((height - t.shape[0], TILE_WIDTH_PX, 3), 255, np.uint8)]) for t in tiles]
    cols = min(COLUMNS, len(tiles))
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % cols)
    grid = np.vstack([np.hstack(tiles[k:k + cols]) for k in range(0, len(tiles), cols)])
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{out_path}: OpenCV could not encode the gallery")
    atomic_write_bytes(Path(out_path), png.tobytes())
    log.info("wrote %s (%d frames)", out_path, len(shown))
