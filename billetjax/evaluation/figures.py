"""Evaluation figures with seaborn: Table 3, the training curves (Figure 10), a detections gallery."""

from __future__ import annotations

import logging
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and cluster nodes
import matplotlib.patches as mpatches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from billetjax import coco as cc  # noqa: E402
from billetjax.evaluation.billet_id import read_billets  # noqa: E402
from billetjax.evaluation.evaluate import load_detections  # noqa: E402
from billetjax.evaluation.metrics import match_detections  # noqa: E402
from billetjax.figures import save_figure  # noqa: E402

logger = logging.getLogger(__name__)

FIGURE_METRICS = ("TP", "MC", "FN", "FP", "CB", "id_read_rate", "id_read_rate_pattern", "id_read_rate_lexicon")
METRIC_LABELS = {"id_read_rate": "ID\nread", "id_read_rate_pattern": "ID read\n+pattern",
                 "id_read_rate_lexicon": "ID read\n+lexicon"}
DPI = 130
LOSS_SMOOTHING_ROWS = 5  # rolling mean over this many logged steps for the (noisy) training loss
OUTCOME_COLOURS = {"TP": "#2ca02c", "MC": "#ff7f0e", "FP": "#d62728", "missed": "#1f77b4"}


def _save(fig: plt.Figure, out_path: str | os.PathLike) -> None:
    logger.info("wrote %s", save_figure(fig, out_path, dpi=DPI, bbox_inches="tight"))


def table3_figure(table3_csv: str | os.PathLike, out_path: str | os.PathLike) -> None:
    """Bars of each metric per experiment, one panel per test set, with the 95 % intervals."""
    table = pd.read_csv(table3_csv)
    metrics = [m for m in FIGURE_METRICS if m in table and table[m].notna().any()]
    long = table.melt(id_vars=["experiment", "test_set"], value_vars=metrics, var_name="metric", value_name="percent")
    lo = table.melt(id_vars=["experiment", "test_set"], value_vars=[f"{m}_lo" for m in metrics], value_name="lo")
    hi = table.melt(id_vars=["experiment", "test_set"], value_vars=[f"{m}_hi" for m in metrics], value_name="hi")
    long["lo"], long["hi"] = lo["lo"].to_numpy(), hi["hi"].to_numpy()
    long["metric"] = long["metric"].map(lambda m: METRIC_LABELS.get(m, m))
    metric_order = [METRIC_LABELS.get(m, m) for m in metrics]
    # Experiments as labels (seaborn draws a numeric hue as a colour scale, not as categories),
    # named by their Table 1 row: synthetic share and number of training images.
    names = {
        int(r.experiment): f"{int(r.experiment)}: {r.label}"
        for r in table.drop_duplicates("experiment").itertuples()
    }
    long["experiment"] = long["experiment"].astype(int).map(names)
    experiments = [names[e] for e in sorted(names)]
    test_sets = sorted(table["test_set"].unique())

    sns.set_theme(style="whitegrid", context="paper")
    palette = sns.color_palette("viridis", n_colors=len(experiments))
    grid = sns.catplot(
        data=long, kind="bar", x="metric", y="percent", hue="experiment", col="test_set",
        col_wrap=min(3, len(test_sets)), order=metric_order, hue_order=experiments, col_order=test_sets,
        palette=palette, errorbar=None, height=3.0, aspect=1.7, legend_out=True,
    )
    for test_set, ax in zip(test_sets, grid.axes.flat):
        panel = long[long["test_set"] == test_set].set_index(["experiment", "metric"])
        # One bar container per experiment (hue level), bars in metric order.
        for experiment, bars in zip(experiments, ax.containers):
            for metric, bar in zip(metric_order, bars):
                if (experiment, metric) not in panel.index:
                    continue
                row = panel.loc[(experiment, metric)]
                if np.isfinite(row["lo"]) and np.isfinite(row["hi"]):
                    x = bar.get_x() + bar.get_width() / 2
                    ax.plot([x, x], [row["lo"], row["hi"]], color="black", linewidth=0.8)
        ax.set_title(f"test set {test_set}")
        ax.set_xlabel("")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
    grid.figure.suptitle("Digit metrics per experiment (Table 3), 95 % intervals", y=1.02)
    _save(grid.figure, out_path)


def training_curves_figure(histories: dict[tuple[int, int], str | os.PathLike], out_path: str | os.PathLike) -> None:
    """Training loss, validation loss and validation mAP@0.5 over steps per experiment (Figure 10).

    histories: {(experiment, seed): history.csv}; rows without an evaluation have empty
    `val_loss`/`val_map50` cells. Several seeds of one experiment show as mean and band.
    """
    frames = []
    for (experiment, seed), path in sorted(histories.items()):
        history = pd.read_csv(path)
        missing = {"step", "loss"} - set(history.columns)
        if missing:
            raise ValueError(f"{path}: history lacks columns {sorted(missing)}")
        history = history.sort_values("step")
        history["loss"] = pd.to_numeric(history["loss"], errors="coerce")
        history["train loss"] = history["loss"].rolling(LOSS_SMOOTHING_ROWS, min_periods=1).mean()
        for column, label in (("val_loss", "validation loss"), ("val_map50", "validation mAP@0.5")):
            history[label] = pd.to_numeric(history[column], errors="coerce") if column in history else np.nan
        history["experiment"] = f"{experiment}"
        history["seed"] = seed
        frames.append(history[["step", "experiment", "seed", "train loss", "validation loss", "validation mAP@0.5"]])
    data = pd.concat(frames, ignore_index=True)
    panels = [p for p in ("train loss", "validation loss", "validation mAP@0.5") if data[p].notna().any()]

    sns.set_theme(style="whitegrid", context="paper")
    experiments = sorted(data["experiment"].unique(), key=int)
    palette = dict(zip(experiments, sns.color_palette("viridis", n_colors=len(experiments))))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        subset = data.dropna(subset=[panel])
        sns.lineplot(
            data=subset, x="step", y=panel, hue="experiment", hue_order=experiments, palette=palette,
            errorbar=("pi", 95) if subset["seed"].nunique() > 1 else None, ax=ax,
            marker="o" if panel != "train loss" else None, markersize=3,
        )
        ax.set_title(panel)
        ax.set_ylabel("")
        if "loss" in panel and (subset[panel] > 0).all():
            ax.set_yscale("log")
        if ax is not axes[0][-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle("Detector training per experiment (Figure 10)")
    fig.tight_layout()
    _save(fig, out_path)


def _billet_order(matches: list, n_billets: int) -> tuple[list[int], list[int]]:
    """Indices of the worst and best billets: by share of characters read correctly, then false positives."""
    keyed = []
    for i, m in enumerate(matches):
        if len(m.gt_labels) == 0:
            continue
        counts = m.counts()
        keyed.append((counts[1] / counts[0], -counts[3], i))  # TP share, fewer FP is better
    keyed.sort()
    worst = [i for *_, i in keyed[:n_billets]]
    best = [i for *_, i in reversed(keyed[-n_billets:]) if i not in worst]
    return worst, best


def detections_gallery(
    gt_path: str | os.PathLike,
    detections_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    iou_threshold: float,
    score_threshold: float,
    n_billets: int,
    title: str = "",
) -> None:
    """Worst and best billets of a test set with each box coloured by its outcome.

    Detections: TP green, MC orange (with the label read), FP red; ground truth nobody found:
    dashed blue ("missed"). Each panel names the billet ID and what was read.
    """
    coco_gt = cc.load(gt_path, require_extras=False)
    detections = load_detections(detections_path)
    matches = match_detections(coco_gt, detections, iou_threshold=iou_threshold, score_threshold=score_threshold)
    reads = {r["image_id"]: r for r in read_billets(coco_gt, detections, score_threshold=score_threshold)}
    names = cc.category_names(coco_gt)
    images = {int(img["id"]): img for img in coco_gt["images"]}
    worst, best = _billet_order(matches, n_billets)
    rows = [("worst", worst), ("best", best)]
    n_cols = max(len(worst), len(best), 1)

    sns.set_theme(style="white", context="paper")
    aspect = max(float(img["height"]) / float(img["width"]) for img in coco_gt["images"])
    panel_w = 3.2
    fig, axes = plt.subplots(2, n_cols, figsize=(panel_w * n_cols, 2 * (panel_w * aspect + 0.6) + 0.4), squeeze=False)
    for r, (label, picks) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(picks):
                continue
            m = matches[picks[c]]
            img = images[m.image_id]
            ax.imshow(cc.read_image(cc.image_path(gt_path, img)))
            for g, box in enumerate(m.gt_boxes):
                if not m.gt_found[g]:
                    ax.add_patch(mpatches.Rectangle(
                        box[:2], box[2], box[3], fill=False, linestyle="--", linewidth=1.2,
                        edgecolor=OUTCOME_COLOURS["missed"],
                    ))
            for box, cat, outcome in zip(m.det_boxes, m.det_labels, m.det_outcome):
                colour = OUTCOME_COLOURS[str(outcome)]
                ax.add_patch(mpatches.Rectangle(box[:2], box[2], box[3], fill=False, linewidth=1.2, edgecolor=colour))
                ax.text(box[0], box[1] - 1, names[int(cat)], color=colour, fontsize=6, va="bottom")
            counts = m.counts()
            read = reads[m.image_id]
            ax.set_title(
                f"{label}: id {img['id']} · TP {counts[1]}/{counts[0]}, MC {counts[2]}, FP {counts[3]}\n"
                f"ID {read['billet_id'] or '–'} · read {read['read'] or '–'}",
                fontsize=7,
            )
    handles = [mpatches.Patch(edgecolor=c, facecolor="none", label=k, linestyle="--" if k == "missed" else "-")
               for k, c in OUTCOME_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(f"Detections by outcome{': ' + title if title else ''}")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _save(fig, out_path)


VERDICT_COLOURS = {"superior": "#2ca02c", "non-inferior": "#1f77b4", "inferior": "#d62728", "inconclusive": "#7f7f7f",
                   "no verdict": "#c7c7c7"}


def replacement_curve_figure(
    comparisons_csv: str | os.PathLike,
    out_path: str | os.PathLike,
    test_set_names: list[str] | None = None,
    summary_metric: str = "TP",
) -> None:
    """Each metric against the synthetic share, one column of panels per test set (a row per metric).

    The curve is the experiments with the reference's number of training images (`on_curve` in
    comparisons.csv; e.g. the real quarter alone is not on it) and the reference itself. A point is
    the experiment's difference to the reference (means over seeds, percentage points; the
    reference is the black square at 0, its value in the corner), its bar the paired 95 %
    interval, its colour the verdict. The shaded band is the margin: from 0 to δ worse (below for
    TP and CB, above for MC, FN and FP; the dashed line). With several seeds a grey bar beside
    each point spans the per-seed differences (min to max). Column titles carry the largest
    synthetic share non-inferior on `summary_metric`.
    """
    from billetjax.evaluation.comparisons import METRICS, largest_accepted_share

    table = pd.read_csv(comparisons_csv)
    curve = table[table["on_curve"].astype(bool)]
    metrics = [m for m in METRICS if m in set(table["metric"])]
    test_sets = sorted(int(t) for t in table["test_set"].unique())
    names = {i: n for i, n in enumerate(test_set_names or [], 1)}
    reference = int(table["reference"].iloc[0])
    several_seeds = table["n_seeds"].max() > 1

    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(len(metrics), len(test_sets), figsize=(2.7 * len(test_sets), 2.1 * len(metrics)),
                             squeeze=False, sharex=True)
    for col, test_set in enumerate(test_sets):
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            rows = curve[(curve["test_set"] == test_set) & (curve["metric"] == metric)].sort_values("synthetic_pct")
            every = table[(table["test_set"] == test_set) & (table["metric"] == metric)]
            if every.empty:
                ax.axis("off")
                continue
            first = every.iloc[0]
            worse = float(first["margin"]) * (1 if first["better"] == "lower" else -1)
            if np.isfinite(worse):  # no margin: a row without a verdict (FN, an insensitive reference)
                ax.axhspan(min(0.0, worse), max(0.0, worse), color="#1f77b4", alpha=0.12, linewidth=0)
                ax.axhline(worse, color="#d62728", linewidth=0.8, linestyle="--")
            ax.axhline(0.0, color="black", linewidth=0.8)
            ref_pct = float(first["reference_pct"])
            points = sorted([(ref_pct, 0.0)] + list(zip(rows["synthetic_pct"], rows["difference"])))
            ax.plot([p[0] for p in points], [p[1] for p in points], color="#444444", linewidth=0.8, zorder=1)
            ax.scatter([ref_pct], [0.0], marker="s", color="black", s=16, zorder=3)
            for r in rows.itertuples():
                colour = VERDICT_COLOURS.get(r.verdict, "#7f7f7f")
                if np.isfinite(r.lo) and np.isfinite(r.hi):
                    ax.plot([r.synthetic_pct] * 2, [r.lo, r.hi], color=colour, linewidth=1.4)
                ax.scatter([r.synthetic_pct], [r.difference], color=colour, s=18, zorder=3)
                if several_seeds and np.isfinite(r.difference_seed_min):
                    x = r.synthetic_pct + 2.5
                    ax.plot([x, x], [r.difference_seed_min, r.difference_seed_max],
                            color="#999999", linewidth=2.5, alpha=0.8, solid_capstyle="butt")
            ax.text(0.02, 0.96, f"ref. {float(first['reference_value']):.1f} %", transform=ax.transAxes,
                    fontsize=6, color="#444444", va="top",
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1})
            if row == 0:
                title = f"test set {test_set}" + (f": {names[test_set]}" if test_set in names else "")
                summary = curve[(curve["test_set"] == test_set) & (curve["metric"] == summary_metric)]
                if not summary.empty:
                    share = largest_accepted_share(summary)
                    title += (f"\n{summary_metric} non-inferior up to {share:g} %" if share is not None
                              else f"\n{summary_metric}: no share non-inferior")
                ax.set_title(title, fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{metric} − reference (points)", fontsize=7)
            if row == len(metrics) - 1:
                ax.set_xlabel("synthetic share (%)")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    handles += [plt.Line2D([], [], marker="s", linestyle="", color="black", label=f"reference (experiment {reference})"),
                mpatches.Patch(color="#1f77b4", alpha=0.12, label="non-inferiority margin")]
    if several_seeds:
        handles.append(plt.Line2D([], [], color="#999999", linewidth=2.5, label="range over seeds"))
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=7)
    fig.suptitle("Replacement curve: difference to the reference, 95 % intervals over billets and seeds", y=1.0)
    fig.tight_layout(rect=(0, 0.05, 1, 0.98))
    _save(fig, out_path)


def domain_gap_figure(
    domain_gap_csv: str | os.PathLike,
    out_path: str | os.PathLike,
    comparisons_csv: str | os.PathLike | None = None,
    metric: str = "TP",
    test_set_names: list[str] | None = None,
) -> None:
    """Left: the real-vs-synthetic classifier's held-out AUC per stamp bank with its 95 % interval
    (0.5 = indistinguishable). Right, when comparisons.csv has an all-synthetic experiment of the
    reference's size: its `metric` difference to the reference per test set (paired 95 % interval)
    against the AUC of the stamps the synthetic pool embeds (its interval as the horizontal bar)."""
    gap = pd.read_csv(domain_gap_csv)
    drop = pd.DataFrame()
    if comparisons_csv is not None:
        comparisons = pd.read_csv(comparisons_csv)
        drop = comparisons[comparisons["on_curve"].astype(bool) & (comparisons["synthetic_pct"] == 100)
                           & (comparisons["metric"] == metric)]
    used = gap[gap["used_by_pool"].astype(bool)]
    with_drop = not drop.empty and not used.empty
    names = {i: n for i, n in enumerate(test_set_names or [], 1)}

    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, 2 if with_drop else 1, figsize=(9.5 if with_drop else 5.0, 3.6), squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(gap))
    colours = ["#d62728" if u else "#1f77b4" for u in gap["used_by_pool"].astype(bool)]
    for i, r in enumerate(gap.itertuples()):
        if np.isfinite(r.lo) and np.isfinite(r.hi):
            ax.plot([i, i], [r.lo, r.hi], color=colours[i], linewidth=1.5)
        ax.scatter([i], [r.auc], color=colours[i], s=25, zorder=3)
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, gap["bank"], rotation=30, ha="right")
    ax.set_ylim(min(0.4, float(np.nanmin(gap["lo"].to_numpy(dtype=float), initial=0.4)) - 0.02), 1.02)
    ax.set_ylabel("held-out AUC, real vs synthetic")
    ax.set_title("Domain gap per stamp bank (red: the pool's)\n0.5 = indistinguishable", fontsize=9)
    if with_drop:
        ax = axes[0][1]
        row = used.iloc[0]
        palette = sns.color_palette("viridis", n_colors=len(drop))
        for colour, r in zip(palette, drop.sort_values("test_set").itertuples()):
            label = f"test set {r.test_set}" + (f": {names[r.test_set]}" if r.test_set in names else "")
            ax.errorbar([row["auc"]], [r.difference],
                        xerr=[[row["auc"] - row["lo"]], [row["hi"] - row["auc"]]] if np.isfinite(row["lo"]) else None,
                        yerr=[[r.difference - r.lo], [r.hi - r.difference]] if np.isfinite(r.lo) else None,
                        fmt="o", color=colour, capsize=2, label=label)
        worse = float(drop["margin"].iloc[0]) * (1 if drop["better"].iloc[0] == "lower" else -1)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.axhline(worse, color="#d62728", linewidth=0.8, linestyle="--")
        ax.set_xlim(0.45, 1.02)
        ax.set_xlabel(f"AUC of {row['bank']}")
        ax.set_ylabel(f"{metric}: 100 % synthetic − reference (points)")
        ax.set_title(f"Drop of all-synthetic training (experiment {int(drop['experiment'].iloc[0])})", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    _save(fig, out_path)


VARIANT_LABELS = {"plain": "plain (concatenated)", "pattern": "grammar", "lexicon": "lexicon"}


def id_read_curve_figure(curves: pd.DataFrame, experiment: int, misread_levels_pct: list[float],
                         test_set_names: list[str], out_path: str | os.PathLike) -> None:
    """Read rate against misread rate per test set (one panel each), a line per decoder, for one
    experiment (seeds pooled); dotted verticals at the reported misread levels."""
    data = curves[curves["experiment"] == int(experiment)]
    test_sets = sorted(data["test_set"].unique()) or sorted(curves["test_set"].unique())
    sns.set_theme(style="whitegrid", context="paper")
    n_cols = min(3, max(1, len(test_sets)))
    n_rows = -(-max(1, len(test_sets)) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.0 * n_cols, 3.3 * n_rows), squeeze=False)
    palette = dict(zip(VARIANT_LABELS, sns.color_palette("deep", n_colors=len(VARIANT_LABELS))))
    # The misread axis is symlog: the interesting part is 0-1 %, yet a plain reading may misread 40 %.
    for ax, test_set in zip(axes.flat, test_sets):
        panel = data[data["test_set"] == test_set]
        for variant, label in VARIANT_LABELS.items():
            line = panel[panel["variant"] == variant]
            if line.empty:
                continue
            ax.step(line["misread"], line["read"], where="post", color=palette[variant], label=label, linewidth=1.4)
            # the loosest threshold (no reject): where the curve ends, also when it never misreads
            ax.plot(line["misread"].iloc[-1], line["read"].iloc[-1], "o", color=palette[variant], markersize=4)
        for level in misread_levels_pct:
            ax.axvline(level, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(-0.01, 100)  # a curve that never misreads runs up the 0 line: keep it in view
        ax.set_ylim(0, 100)
        name = test_set_names[test_set - 1] if 0 < test_set <= len(test_set_names) else ""
        n = int(panel["n_readings"].iloc[0]) if not panel.empty else 0
        ax.set_title(f"test set {test_set}" + (f": {name}" if name else "") + f" ({n} readings)")
        ax.set_xlabel("misread rate (% of billets)")
        ax.set_ylabel("read rate (% of billets)")
    for ax in list(axes.flat)[len(test_sets):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Whole-ID reading of experiment {experiment}: read vs misread over the reject threshold", y=1.0)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    _save(fig, out_path)
