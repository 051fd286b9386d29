"""Numbers and pictures of the real data: statistics per site and visibility, a sample grid."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from billetjax import coco as cc
from billetjax.figures import save_figure
from billetjax.vocabulary import UNKNOWN, VISIBILITY


def statistics(datasets: dict[str, str | os.PathLike]) -> pd.DataFrame:
    """One row per data set × site × visibility (and an 'all' row per data set): images,
    characters, characters per image, box heights (median, 5th and 95th percentile, px)."""
    rows = []
    for name, path in datasets.items():
        data = cc.load(path)
        per_image = cc.annotations_by_image(data)
        frame = pd.DataFrame([
            {"site": img.get("site", UNKNOWN), "visibility": img.get("visibility", UNKNOWN), "n_chars": len(per_image[img["id"]]),
             "heights": [a["bbox"][3] for a in per_image[img["id"]]],
             "widths": [a["bbox"][2] for a in per_image[img["id"]]]}
            for img in data["images"]
        ])
        groups = [("all", "all", frame)] + [
            (site, vis, g) for (site, vis), g in frame.groupby(["site", "visibility"], sort=True)
        ]
        for site, vis, g in groups:
            heights = np.concatenate([np.asarray(h, float) for h in g["heights"]]) if len(g) else np.zeros(0)
            widths = np.concatenate([np.asarray(w, float) for w in g["widths"]]) if len(g) else np.zeros(0)
            q = np.percentile(heights, [5, 50, 95]) if heights.size else [np.nan] * 3
            rows.append({
                "dataset": name, "site": site, "visibility": vis, "images": len(g),
                "image_share": len(g) / max(len(frame), 1), "characters": int(g["n_chars"].sum()),
                "chars_per_image": float(g["n_chars"].mean()) if len(g) else np.nan,
                "chars_per_image_min": int(g["n_chars"].min()) if len(g) else 0,
                "chars_per_image_max": int(g["n_chars"].max()) if len(g) else 0,
                "box_height_p05_px": q[0], "box_height_median_px": q[1], "box_height_p95_px": q[2],
                "box_width_median_px": float(np.median(widths)) if widths.size else np.nan,
            })
    return pd.DataFrame(rows)


def real_samples_figure(pool_json: str | os.PathLike, out_png: str | os.PathLike, per_cell: int = 2, seed: int = 0,
                title: str = "Real billet images: sites × visibility (boxes and labels drawn)") -> None:
    """A grid of images: rows = sites, columns = visibility classes × per_cell; boxes and labels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    data = cc.load(pool_json)
    names = cc.category_names(data)
    per_image = cc.annotations_by_image(data)
    rng = np.random.default_rng(seed)
    present = {img.get("visibility", UNKNOWN) for img in data["images"]}
    classes = [v for v in (*VISIBILITY, UNKNOWN) if v in present]
    sites = sorted({img.get("site", UNKNOWN) for img in data["images"]})
    fig, axes = plt.subplots(len(sites), len(classes) * per_cell,
                             figsize=(3.2 * len(classes) * per_cell, 3.6 * len(sites)), squeeze=False)
    for r, site in enumerate(sites):
        for c, vis in enumerate(classes):
            members = [img for img in data["images"]
                       if img.get("site", UNKNOWN) == site and img.get("visibility", UNKNOWN) == vis]
            picks = rng.choice(len(members), size=min(per_cell, len(members)), replace=False) if members else []
            for k in range(per_cell):
                ax = axes[r, c * per_cell + k]
                ax.set_axis_off()
                if k >= len(picks):
                    continue
                img = members[picks[k]]
                ax.imshow(cc.read_image(cc.image_path(pool_json, img)))
                for ann in per_image[img["id"]]:
                    x, y, w, h = ann["bbox"]
                    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="#00e5ff", linewidth=0.8))
                    ax.text(x, y - 1, names[ann["category_id"]], color="#00e5ff", fontsize=6, va="bottom")
                ax.set_title(f"site {site} · {vis}\n{img.get('billet_id', '')}", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)
