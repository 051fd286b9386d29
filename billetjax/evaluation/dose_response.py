"""results/figures/dose_response.png: the real-only curve with its band, and the rows with
synthetic images placed on it at their real-image equivalents (billetjax.evaluation.exchange)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from billetjax.evaluation.comparisons import RunsOnTestSet  # noqa: E402
from billetjax.evaluation.exchange import fit_curve, curve_rows, priced_rows  # noqa: E402
from billetjax.experiments import Experiment  # noqa: E402
from billetjax.figures import save_figure  # noqa: E402

logger = logging.getLogger(__name__)
GRID_POINTS = 25


def dose_response_figure(study: Mapping[int, RunsOnTestSet], table: pd.DataFrame, experiments: Sequence[Experiment],
                         metric: str, out_path: str | os.PathLike, test_set_names: Sequence[str] = ()) -> None:
    """One panel per test set: `metric` against real images (log axis) for the real-only rows (each
    seed, and the seed mean), the fitted line with its 95 % band over billets and seeds, and each
    row with synthetic images at its real equivalent (horizontal bar: its interval), joined to
    the number of real images it actually had."""
    curve, priced = curve_rows(experiments), priced_rows(experiments)
    log_n = np.log([e.n_real for e in curve])
    grid = np.linspace(log_n.min() - 0.3, log_n.max() + 0.15, GRID_POINTS)
    names = dict(enumerate(test_set_names, 1))
    sns.set_theme(style="whitegrid", context="paper")
    palette = dict(zip([e.number for e in priced], sns.color_palette("viridis", n_colors=max(len(priced), 1))))
    n_sets = len(study)
    fig, axes = plt.subplots(1, n_sets, figsize=(3.4 * n_sets, 3.4), sharey=True, squeeze=False)
    for ax, (test_set, runs) in zip(axes[0], study.items()):
        numbers = [e.number for e in curve]
        values = runs.values[metric][[runs.index(n) for n in numbers]]  # [points, seeds]
        for seed_column in values.T:
            ax.scatter(np.exp(log_n), seed_column, s=10, color="0.6", zorder=2)
        ax.scatter(np.exp(log_n), np.nanmean(values, 1), s=28, color="k", zorder=3, label="real only (seed mean)")
        band = [runs.estimate(metric, numbers, lambda y, g=g: _line_at(y, log_n, g)) for g in grid]
        ax.plot(np.exp(grid), [b.value for b in band], color="k", lw=1)
        ax.fill_between(np.exp(grid), [b.lo for b in band], [b.hi for b in band], color="k", alpha=0.12, lw=0,
                        label="fit, 95 % band")
        rows = table[(table["test_set"] == test_set) & (table["metric"] == metric)]
        for e in priced:
            row = rows[rows["experiment"] == e.number]
            if row.empty:
                continue
            row = row.iloc[0]
            colour = palette[e.number]
            y = row["value"]
            if np.isfinite(row["real_equivalent"]):
                ax.errorbar(row["real_equivalent"], y, xerr=[[row["real_equivalent"] - row["lo"]],
                                                             [row["hi"] - row["real_equivalent"]]],
                            fmt="o", color=colour, ms=5, capsize=2, zorder=4, label=f"{e.number}: {e.label}")
                if e.n_real > 0:
                    ax.annotate("", xy=(row["real_equivalent"], y), xytext=(e.n_real, y),
                                arrowprops=dict(arrowstyle="->", color=colour, lw=0.8))
            else:
                ax.axhline(y, color=colour, lw=0.8, ls=":", label=f"{e.number}: {e.label} (no reading)")
        ax.set_xscale("log")
        ax.set_xticks([e.n_real for e in curve], [str(e.n_real) for e in curve])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_title(f"test set {test_set}" + (f"\n{names[test_set]}" if test_set in names else ""), fontsize=8)
        ax.set_xlabel("real training images")
    axes[0][0].set_ylabel(f"{metric} (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, bbox_to_anchor=(0.5, -0.12))
    fig.suptitle(f"What synthetic images are worth in real ones ({metric}; intervals over billets and seeds)", fontsize=9)
    fig.tight_layout()
    logger.info("wrote %s", save_figure(fig, out_path, dpi=130, bbox_inches="tight"))


def _line_at(y: np.ndarray, log_n: np.ndarray, at: float) -> np.ndarray:
    intercept, slope = fit_curve(y, log_n)
    return intercept + slope * at
