"""A figure of the stamp masks segmented from box-only annotations, for a user to judge them.

An annotation drawn as a rectangle (`segmentation: []`) gives no outline: its pair's mask is
segmented from the crop (`billetjax.data.stamps.segment_stamp`). The figure shows a sample of those
pairs as crop | mask | overlay, so a user sees whether the GAN learns from sensible masks.
"""

from __future__ import annotations

import os

import numpy as np

from billetjax.figures import save_figure

# Overlay colour of the mask on its crop, and how strongly it tints the crop.
OVERLAY_RGB = np.array([255, 40, 40], np.float32)
OVERLAY_ALPHA = 0.45


def overlay(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The RGB crop tinted with OVERLAY_RGB where the mask is set (uint8[S, S, 3])."""
    out = crop.astype(np.float32)
    on = mask > 0
    out[on] = (1 - OVERLAY_ALPHA) * out[on] + OVERLAY_ALPHA * OVERLAY_RGB
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def box_mask_figure(pairs_npz: str | os.PathLike | list[str | os.PathLike], out_png: str | os.PathLike,
                    n: int = 24, per_row: int = 4, seed: int = 0) -> int:
    """Draw up to n box-derived pairs (crop | mask | overlay, per_row triplets a row) from the
    stamp-pair npz file(s); returns how many box-derived pairs the files hold.

    Files without `mask_source` count as all-polygon. With no box-derived pair the figure is a
    short notice saying so (still a PNG, so the workflow's target exists).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = [pairs_npz] if isinstance(pairs_npz, (str, os.PathLike)) else list(pairs_npz)
    crops, masks, labels, total = [], [], [], 0
    for file in files:
        with np.load(file) as data:
            total += len(data["masks"])
            if "mask_source" not in data.files:
                continue
            box = np.flatnonzero(data["mask_source"] == "box")
            crops += list(data["images"][box])
            masks += list(data["masks"][box])
            labels += [str(v) for v in data["labels"][box]] if "labels" in data.files else [""] * len(box)
    n_box = len(crops)
    if n_box == 0:
        fig, ax = plt.subplots(figsize=(6.4, 1.6))
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"All {total} stamp masks come from annotated polygons:\n"
                          "no annotation is box-only, so no mask was segmented.",
                ha="center", va="center", fontsize=10)
        fig.suptitle("Box-derived stamp masks: none", fontsize=11)
        save_figure(fig, out_png, dpi=110)
        return 0
    # A seeded sample, shown in file order so that neighbours in the files stay neighbours.
    pick = np.sort(np.random.default_rng(seed).choice(n_box, size=min(n, n_box), replace=False))
    rows = -(-len(pick) // per_row)
    fig, axes = plt.subplots(rows, 3 * per_row, figsize=(1.25 * 3 * per_row, 1.45 * rows + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for k, i in enumerate(pick):
        r, c = divmod(k, per_row)
        for j, (panel, what) in enumerate(((crops[i], "crop"), (masks[i], "mask"), (overlay(crops[i], masks[i]), "overlay"))):
            ax = axes[r, 3 * c + j]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"{labels[i]} {what}" if j == 0 and labels[i] else what, fontsize=7)
    fig.suptitle(f"Box-derived stamp masks: {n_box} of {total} pairs segmented from box-only annotations "
                 f"({len(pick)} shown)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)
    return n_box
