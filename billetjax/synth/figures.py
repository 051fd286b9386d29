"""Figures of the synthesis stage: synthetic billets with their boxes (Figure 9) and stamp strips."""

from __future__ import annotations

import os

import numpy as np

from billetjax import coco as cc
from billetjax.figures import save_figure
from billetjax.vocabulary import PARTIAL, WELL


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def synthetic_samples(pool_json: str | os.PathLike, out_png: str | os.PathLike, per_row: int = 4,
                      seed: int = 0) -> None:
    """Two rows of synthetic billets, well and partially visible, with boxes and labels (Figure 9)."""
    plt = _pyplot()
    from matplotlib.patches import Polygon as PolygonPatch
    from matplotlib.patches import Rectangle

    data = cc.load(pool_json)
    names = cc.category_names(data)
    per_image = cc.annotations_by_image(data)
    rng = np.random.default_rng(seed)
    rows = [(WELL, "well visible"), (PARTIAL, "partially visible")]
    fig, axes = plt.subplots(len(rows), per_row, figsize=(3.2 * per_row, 3.5 * len(rows)), squeeze=False)
    for r, (visibility, title) in enumerate(rows):
        members = [img for img in data["images"] if img["visibility"] == visibility]
        picks = rng.choice(len(members), size=min(per_row, len(members)), replace=False) if members else []
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= len(picks):
                continue
            img = members[picks[c]]
            ax.imshow(cc.read_image(cc.image_path(pool_json, img)))
            for ann in per_image[img["id"]]:
                x, y, w, h = ann["bbox"]
                partial = ann.get("visible_fraction", 1.0) < 0.8
                colour = "#ff9100" if partial else "#00e5ff"
                ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=0.8))
                for poly in ann.get("segmentation", [])[:1]:
                    ax.add_patch(PolygonPatch(np.asarray(poly).reshape(-1, 2), closed=True, fill=False,
                                              edgecolor=colour, linewidth=0.4, alpha=0.6))
                ax.text(x, y - 1, names[ann["category_id"]], color=colour, fontsize=6, va="bottom")
            mode = img.get("partial_mode", "none")
            ax.set_title(f"site {img['site']} · {title}{'' if mode == 'none' else f' ({mode})'}\n{img['billet_id']}",
                         fontsize=8)
    fig.suptitle("Synthetic billet images with their annotations (orange: partially visible characters)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)


def stamp_strip(bank_npz: str | os.PathLike, out_png: str | os.PathLike, count: int = 12, title: str = "") -> None:
    """Renderer inputs (top) and rendered stamps (bottom) of the first `count` stamps of a bank,
    two of them cut to partially visible ones."""
    plt = _pyplot()
    with np.load(bank_npz) as bank:
        labels, partial = bank["labels"], bank["partial"]
        whole = np.flatnonzero(~partial)[: max(count - 2, 1)]
        picks = np.concatenate([whole, np.flatnonzero(partial)[: count - len(whole)]])
        masks, images = bank["inputs"][picks], bank["images"][picks]
        checkpoint = int(bank["checkpoint"][0])
    fig, axes = plt.subplots(2, len(picks), figsize=(1.1 * len(picks), 2.6), squeeze=False)
    for c, k in enumerate(picks):
        axes[0, c].imshow(masks[c], cmap="gray", vmin=0, vmax=255)
        axes[1, c].imshow(images[c])
        axes[0, c].set_title(f"{labels[k]}{' (cut)' if partial[k] else ''}", fontsize=7)
        for ax in axes[:, c]:
            ax.set_axis_off()
    default = f"Stamps of generator step {checkpoint}: mask → rendering" if checkpoint else \
        "Stamps of the classic renderer (shaded height field): mask → rendering"
    fig.suptitle(title or default, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=120)
