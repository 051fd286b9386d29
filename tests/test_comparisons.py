"""Paired comparisons with a reference (billetjax.evaluation.comparisons): intervals known by hand,
pairing against unpaired intervals, verdicts against interval and margin, the metrics files end to
end, the replacement curve's summary and figure."""

import json

import numpy as np
import pandas as pd
import pytest

from billetjax import coco as cc
from billetjax.evaluation.bootstrap import bootstrap_intervals
from billetjax.evaluation.comparisons import (
    COLUMNS,
    EXTRA_COLUMNS,
    LOWER_IS_BETTER,
    METRICS,
    VERDICTS,
    comparison_table,
    largest_accepted_share,
    paired_bootstrap,
    replacement_summary,
    verdict,
    write_comparison_table,
    write_replacement_summary,
)
from billetjax.evaluation.evaluate import RUN_COLUMNS, evaluate_files
from billetjax.evaluation.metrics import percentages

MARGINS = {"TP": 2.0, "MC": 2.0, "FN": 2.0, "FP": 2.0, "CB": 5.0}


def billet_counts(tp_per_billet, n_gt: int = 10, fp_per_billet=None) -> np.ndarray:
    """Per-billet counts in RUN_COLUMNS order: n_gt characters each, tp of them read right, the
    rest missed (no MC), fp false positives; no billet IDs."""
    tp = np.asarray(tp_per_billet, dtype=np.int64)
    fp = np.zeros_like(tp) if fp_per_billet is None else np.asarray(fp_per_billet, dtype=np.int64)
    out = np.zeros((len(tp), len(RUN_COLUMNS)), dtype=np.int64)
    col = {name: i for i, name in enumerate(RUN_COLUMNS)}
    out[:, col["n_gt"]] = n_gt
    out[:, col["tp"]] = tp
    out[:, col["fp"]] = fp
    out[:, col["n_det"]] = tp + fp
    out[:, col["all_correct"]] = tp == n_gt
    out[:, col["has_gt"]] = 1
    return out


# ------------------------------------------------------------------ verdicts


@pytest.mark.parametrize("lo, hi, lower, expected", [
    # higher is better (TP), margin 2
    (0.5, 3.0, False, "superior"),
    (-1.9, 1.0, False, "non-inferior"),
    (-1.9, -0.5, False, "non-inferior"),  # significantly worse, but by less than the margin
    (0.0, 1.0, False, "non-inferior"),  # touching 0 does not pass it
    (-2.0, 1.0, False, "inconclusive"),  # touching -margin does not pass it
    (-5.0, 4.0, False, "inconclusive"),
    (-5.0, -1.0, False, "inconclusive"),  # worse, but maybe by less than the margin
    (-5.0, -2.5, False, "inferior"),
    # lower is better (FP): the same, mirrored
    (-3.0, -0.5, True, "superior"),
    (-1.0, 1.9, True, "non-inferior"),
    (0.5, 1.9, True, "non-inferior"),
    (-1.0, 2.0, True, "inconclusive"),
    (1.0, 5.0, True, "inconclusive"),
    (2.5, 5.0, True, "inferior"),
    (float("nan"), float("nan"), False, "inconclusive"),
])
def test_verdict(lo, hi, lower, expected):
    assert verdict(lo, hi, 2.0, lower) == expected


def test_verdicts_partition_the_line():
    """Every interval gets exactly the verdict its position relative to -margin and 0 gives."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        lo, hi = np.sort(rng.uniform(-6, 6, 2))
        margin = rng.uniform(0.5, 4)
        for lower in (False, True):
            got = verdict(lo, hi, margin, lower)
            low, high = (-hi, -lo) if lower else (lo, hi)
            if low > 0:
                expected = "superior"
            elif low > -margin:
                expected = "non-inferior"
            elif high < -margin:
                expected = "inferior"
            else:
                expected = "inconclusive"
            assert got == expected
    with pytest.raises(ValueError, match="margin"):
        verdict(0.0, 1.0, 0.0)


# ------------------------------------------------------------------ paired bootstrap, known intervals


def test_constant_shift_has_a_point_interval():
    """The experiment reads exactly one more character on every 10-character billet: in every
    resample TP is 10 points higher and FN 10 points lower, so the interval is that point."""
    rng = np.random.default_rng(1)
    reference = rng.integers(2, 9, 30)
    result = paired_bootstrap(billet_counts(reference + 1), billet_counts(reference), 500, seed=3)
    assert result["TP"]["difference"] == pytest.approx(10.0)
    assert (result["TP"]["lo"], result["TP"]["hi"]) == pytest.approx((10.0, 10.0))
    assert (result["FN"]["lo"], result["FN"]["hi"]) == pytest.approx((-10.0, -10.0))
    assert (result["MC"]["lo"], result["MC"]["hi"]) == (0.0, 0.0)
    assert result["TP"]["p_value"] == pytest.approx(2 / 501)
    assert result["MC"]["p_value"] == 1.0  # no difference in any resample


def test_one_billet_apart_interval_by_hand():
    """20 billets of 10 characters, one read better by one character: the difference is
    100 * k / 200 points when that billet is drawn k ~ Binomial(20, 1/20) times. P(k = 0) = 0.358,
    P(k <= 2) = 0.925, P(k <= 3) = 0.984: the 95 % interval is [0, 1.5] points."""
    reference = np.full(20, 8)
    experiment = reference.copy()
    experiment[7] = 9
    result = paired_bootstrap(billet_counts(experiment), billet_counts(reference), 4000, seed=0)
    assert result["TP"]["difference"] == pytest.approx(0.5)
    assert (result["TP"]["lo"], result["TP"]["hi"]) == pytest.approx((0.0, 1.5))


def test_seeds_resampled_in_pairs():
    """Seed 0 of the experiment reads one more character per billet than seed 0 of the reference,
    seed 1 reads the same: the difference of the means is 5 points, and the seed draws (0, 0),
    (0, 1), (1, 1) give 10, 5, 0 with chances 1/4, 1/2, 1/4: the interval is [0, 10]."""
    reference = np.full(25, 6)
    experiment = np.stack([billet_counts(reference + 1), billet_counts(reference)])
    result = paired_bootstrap(experiment, np.stack([billet_counts(reference)] * 2), 2000, seed=5)
    assert result["TP"]["difference"] == pytest.approx(5.0)
    assert list(result["TP"]["per_seed"]) == pytest.approx([10.0, 0.0])
    assert (result["TP"]["lo"], result["TP"]["hi"]) == pytest.approx((0.0, 10.0))


def test_pairing_separates_what_unpaired_intervals_cannot():
    """Billets of very different difficulty (2 or 9 of 10 characters readable by the reference),
    the experiment one character better on every third billet: each model's own interval is wide
    and they overlap, but the paired interval of the difference excludes zero."""
    reference = np.where(np.arange(60) % 2 == 0, 2, 9)
    experiment = reference + (np.arange(60) % 3 == 0)
    exp_counts, ref_counts = billet_counts(experiment), billet_counts(reference)

    def metric_fn(totals):
        return percentages(totals[..., :7])

    unpaired_exp = bootstrap_intervals(exp_counts, metric_fn, 2000, seed=1)["TP"]
    unpaired_ref = bootstrap_intervals(ref_counts, metric_fn, 2000, seed=2)["TP"]
    assert unpaired_exp[0] < unpaired_ref[1]  # the two intervals overlap
    paired = paired_bootstrap(exp_counts, ref_counts, 2000, seed=3)["TP"]
    assert paired["difference"] == pytest.approx(100 * 20 / 600)
    assert 0 < paired["lo"] < paired["difference"] < paired["hi"]
    assert paired["p_value"] < 0.01


def test_no_resamples_no_interval():
    result = paired_bootstrap(billet_counts([5, 6]), billet_counts([5, 5]), 0, seed=0)
    assert result["TP"]["difference"] == pytest.approx(5.0)
    assert np.isnan(result["TP"]["lo"]) and np.isnan(result["TP"]["p_value"])
    with pytest.raises(ValueError, match="same seeds and images"):
        paired_bootstrap(billet_counts([5, 6, 7]), billet_counts([5, 5]), 10, seed=0)


# ------------------------------------------------------------------ through the metrics files

EXPERIMENTS = {"images": 40, "sets": [{"synthetic_pct": 0, "images_fraction": 1.0},
                                      {"synthetic_pct": 50, "images_fraction": 1.0},
                                      {"synthetic_pct": 0, "images_fraction": 0.25}]}
EVALUATION = {"iou_threshold": 0.5, "score_threshold": 0.5, "bootstrap_samples": 300, "id_pattern": None,
              "id_reading": {"min_confidence": 0.5, "miss_probability": 0.05, "misread_levels_pct": [0.5]},
              "reference_experiment": 1, "margins": MARGINS}


@pytest.fixture(scope="module")
def metrics_files(tmp_path_factory, write_evaluation_test_set, controlled_detections):
    """Experiment 1 (reference) with the controlled errors (TP 85), experiment 2 perfect (TP 100),
    experiment 3 the same as the reference; two seeds each, on test sets 1 and 3."""
    folder = tmp_path_factory.mktemp("comparisons")
    gt_path = write_evaluation_test_set(folder)
    coco = cc.load(gt_path)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.95}
               for a in coco["annotations"]]
    paths = []
    for experiment, dets in ((1, controlled_detections(coco)), (2, perfect), (3, controlled_detections(coco))):
        for seed in (0, 1):
            for test_set in (1, 3):
                det_path = folder / f"det_{experiment}_{seed}_{test_set}.json"
                det_path.write_text(json.dumps(dets))
                out = folder / "metrics" / f"exp{experiment}" / f"seed{seed}" / f"testset{test_set}.json"
                evaluate_files(gt_path, det_path, out, EVALUATION, 2022, experiment, seed, test_set)
                paths.append(out)
    return folder, paths


def test_comparison_table(metrics_files, table1_of):
    folder, paths = metrics_files
    table = write_comparison_table(paths, folder / "comparisons.csv", table1_of(EXPERIMENTS), EVALUATION, 2022)
    read = pd.read_csv(folder / "comparisons.csv")
    assert list(read.columns) == COLUMNS + EXTRA_COLUMNS
    assert len(read) == 2 * 2 * len(METRICS)  # test sets x experiments 2, 3 x metrics
    assert set(read["experiment"]) == {2, 3} and set(read["reference"]) == {1}
    assert list(read["test_set"].unique()) == [1, 3]
    perfect_tp = read[(read.experiment == 2) & (read.metric == "TP")].iloc[0]
    assert perfect_tp.difference == pytest.approx(15.0) and perfect_tp.value == pytest.approx(100.0)
    assert perfect_tp.reference_value == pytest.approx(85.0)
    assert perfect_tp.verdict == "superior" and perfect_tp.lo > 0
    assert perfect_tp.n_seeds == 2 and perfect_tp.difference_seed_sd == 0 and perfect_tp.n_billets == 20
    fp = read[(read.experiment == 2) & (read.metric == "FP")].iloc[0]
    assert fp.difference == pytest.approx(-2.5) and fp.better == "lower"
    same = read[read.experiment == 3]
    assert (same["difference"] == 0).all() and (same["lo"] == 0).all() and (same["hi"] == 0).all()
    assert (same["verdict"] == "non-inferior").all() and (same["p_value"] == 1).all()
    assert list(read.drop_duplicates("experiment")["on_curve"]) == [True, False]  # 3 has a quarter of the images
    # Every verdict is the one its interval and margin give.
    for row in table.itertuples():
        assert row.verdict in VERDICTS
        assert row.verdict == verdict(row.lo, row.hi, row.margin, row.metric in LOWER_IS_BETTER)
        assert row.margin == MARGINS[row.metric]


def test_comparison_table_refusals(metrics_files, table1_of):
    folder, paths = metrics_files
    with pytest.raises(ValueError, match="reference_experiment = 4"):
        comparison_table(paths, table1_of(EXPERIMENTS), {**EVALUATION, "reference_experiment": 4}, 0)
    one_seed_of_2 = [p for p in paths if not ("exp2" in str(p) and "seed1" in str(p))]
    with pytest.raises(ValueError, match="same seeds"):
        comparison_table(one_seed_of_2, table1_of(EXPERIMENTS), EVALUATION, 0)
    without_3 = [p for p in paths if "exp3" not in str(p)]
    with pytest.raises(ValueError, match="no metrics for experiment 3"):
        comparison_table(without_3, table1_of(EXPERIMENTS), EVALUATION, 0)


# ------------------------------------------------------------------ the replacement curve


def curve_table(verdicts: dict[float, str], test_set: int = 1, metric: str = "TP") -> pd.DataFrame:
    return pd.DataFrame([{"experiment": i + 2, "reference": 1, "test_set": test_set, "metric": metric,
                          "margin": 2.0, "verdict": v, "synthetic_pct": share, "on_curve": True}
                         for i, (share, v) in enumerate(verdicts.items())])


def test_largest_accepted_share():
    assert largest_accepted_share(curve_table({25: "non-inferior", 50: "superior", 75: "non-inferior",
                                               100: "inferior"})) == 75
    # "Up to": a passing larger share after a failing one does not count.
    assert largest_accepted_share(curve_table({25: "non-inferior", 50: "inconclusive", 75: "non-inferior"})) == 25
    assert largest_accepted_share(curve_table({25: "inconclusive", 50: "non-inferior"})) is None


def test_replacement_summary_sentences():
    table = pd.concat([
        curve_table({25: "non-inferior", 50: "non-inferior", 75: "non-inferior", 100: "inferior"}, test_set=1),
        curve_table({25: "inconclusive", 50: "non-inferior", 75: "inferior", 100: "inferior"}, test_set=2),
        # off the curve (a quarter of the images): ignored
        curve_table({0: "inferior"}, test_set=1).assign(on_curve=False, experiment=6),
    ])
    sentences = replacement_summary(table, "TP", 0.0, {1: "all", 2: "well visible"})
    assert sentences == [
        "Up to 75 % synthetic data is non-inferior to all-real on test set 1 (all) (TP, margin 2 points, 95 %).",
        "No synthetic share is non-inferior to all-real on test set 2 (well visible) (TP, margin 2 points, 95 %): "
        "already 25 % synthetic is inconclusive.",
    ]


def test_summary_file_and_curve_figure(metrics_files, table1_of):
    from billetjax.evaluation.figures import replacement_curve_figure

    folder, paths = metrics_files
    csv = folder / "comparisons_for_figure.csv"
    write_comparison_table(paths, csv, table1_of(EXPERIMENTS), EVALUATION, 2022)
    sentences = write_replacement_summary(csv, folder / "summary.txt", "TP", table1_of(EXPERIMENTS), ["all", "well", "hard"])
    text = (folder / "summary.txt").read_text()
    assert sentences[0] == "Up to 50 % synthetic data is non-inferior to all-real on test set 1 (all) (TP, margin 2 points, 95 %)."
    assert text.startswith(sentences[0]) and "test set 3 (hard)" in text and "CB" in text
    replacement_curve_figure(csv, folder / "curve.png", ["all", "well", "hard"], "TP")
    png = (folder / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
