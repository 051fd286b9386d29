"""GAN figures: sample grids per checkpoint (mask | target | synthesis, paper Figure 4), losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from billetjax.figures import save_figure
from billetjax.pix2pix.sample import render_stamps


def pick_samples(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of n validation pairs, covering as many different characters as possible."""
    order: list[int] = []
    seen: set[str] = set()
    for i, label in enumerate(labels):  # first the first stamp of every character
        if label not in seen:
            seen.add(label)
            order.append(i)
    order += [i for i in range(len(labels)) if i not in set(order)]
    return np.array(sorted(order[:n]))


def gan_samples_figure(generator_path: str | Path, val_path: str | Path, out_png: str | Path, seed: int,
                n: int = 8, per_row: int = 2) -> Path:
    """Render n validation masks and save rows of (mask | target | synthesis) triplets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with np.load(val_path) as data:
        images, masks = data["images"], data["masks"]
        labels = data["labels"] if "labels" in data.files else np.array([""] * len(masks))
    idx = pick_samples(labels, min(n, len(masks)))
    synth = render_stamps(generator_path, masks[idx], seed)
    step = load_generator_step(generator_path)
    rows = -(-len(idx) // per_row)
    fig, axes = plt.subplots(rows, 3 * per_row, figsize=(1.6 * 3 * per_row, 1.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, i in enumerate(idx):
        r, c = divmod(k, per_row)
        panels = (np.repeat(masks[i][..., None], 3, -1), images[i], synth[k])
        for j, (panel, title) in enumerate(zip(panels, ("mask", "target", "synthesis"))):
            ax = axes[r, 3 * c + j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(f"{title} '{labels[i]}'" if j == 0 else title, fontsize=8)
    fig.suptitle(f"pix2pix validation stamps, generator step {step}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=110)


def load_generator_step(path: str | Path) -> int:
    """The training step a generator file was saved at."""
    from flax import serialization

    return int(serialization.msgpack_restore(Path(path).read_bytes())["step"])


def loss_figure(history_csv: str | Path, out_png: str | Path) -> Path:
    """Adversarial losses and L1 (train and validation) over training steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    history = pd.read_csv(history_csv)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    adversarial = history.melt("step", ["g_gan", "d_loss"], "loss", "value")
    sns.lineplot(adversarial, x="step", y="value", hue="loss", ax=axes[0])
    axes[0].set_title("adversarial losses (BCE)")
    l1 = history.rename(columns={"g_l1": "train (batch)", "val_l1": "validation"})
    l1 = l1.melt("step", ["train (batch)", "validation"], "set", "L1")
    sns.lineplot(l1, x="step", y="L1", hue="set", ax=axes[1])
    axes[1].set_title("L1 to target (images in [-1, 1])")
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=110)
