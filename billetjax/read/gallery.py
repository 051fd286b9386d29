"""The gallery of the least certain readings: the frames at the top of `to_label_first.csv`,
displayed upright with their characters boxed (the weakest in red) and their reading."""

from __future__ import annotations

import logging
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as mpatches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from billetjax.data.importer import decode_frame  # noqa: E402
from billetjax.read.pipeline import FrameReading, preprocessing_options  # noqa: E402
from billetjax.read.reader import Reader  # noqa: E402
from billetjax.utils import save_figure  # noqa: E402

log = logging.getLogger(__name__)
COLUMNS = 3
DPI = 110


def least_certain_gallery(readings: list[FrameReading], ranking: list[dict], reader: Reader, frames: int,
                          out_path: str | os.PathLike) -> None:
    """Draw the first `frames` frames of the ranking that were read (a figure saying so when none was)."""
    by_name = {r.frame.name: r for r in readings}
    shown = [by_name[row["file"]] for row in ranking if row["status"] == "read"][:frames]
    threshold = float(reader.meta["reading"]["score_threshold"])
    opts = preprocessing_options(reader)
    cols = max(1, min(COLUMNS, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no frame was read", ha="center", va="center")
    for ax, r in zip(axes.ravel(), shown):
        pixels = decode_frame(r.frame.file, opts).pixels
        ax.imshow(pixels)
        keep = np.flatnonzero(r.scores >= threshold)
        weakest = keep[np.argmin(r.scores[keep])] if len(keep) else -1
        for j in keep:
            x1, y1, x2, y2 = r.boxes[j]
            colour = "red" if j == weakest else "lime"
            ax.add_patch(mpatches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2, ec=colour))
            ax.text(x1, y1, f"{reader.categories[r.labels[j]]['name']} {r.scores[j]:.2f}", color=colour,
                    fontsize=6, va="bottom")
        g = r.reading
        weakest_txt = f"{g['min_score']:.2f}" if g["min_score"] is not None else "-"
        valid = {True: ", valid", False: ", fails pattern", None: ""}[g["id_valid"]]
        ax.set_title(f"{r.frame.name}\n'{g['billet_id']}' ({g['decoder']}{valid}, conf {g['confidence']:.2f}, "
                     f"weakest {weakest_txt})", fontsize=7)
    fig.suptitle("Least certain readings (to label first)", fontsize=9)
    log.info("wrote %s", save_figure(fig, out_path, dpi=DPI, bbox_inches="tight"))
