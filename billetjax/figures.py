"""What every figure of the study shares: writing it to its file."""

from __future__ import annotations

import os
from pathlib import Path


def save_figure(fig, path: str | os.PathLike, dpi: int = 110, **savefig_kwargs) -> Path:
    """Write a matplotlib figure (making its folder) and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **savefig_kwargs)
    plt.close(fig)
    return path
