"""Paired comparisons with a reference (billetjax.evaluation.comparisons): intervals known by hand,
pairing against unpaired intervals, verdicts against interval and margin, assay sensitivity, the
pre-stated plan (primary sequence, Holm), the metrics files end to end, the replacement curve's
summary and figure."""

import json

import numpy as np
import pandas as pd
import pytest

from billetjax import coco as cc
from billetjax.coco_map import map50
from billetjax.evaluation.bootstrap import bootstrap_intervals
from billetjax.evaluation.comparisons import (
    COLUMNS,
    EXTRA_COLUMNS,
    LOWER_IS_BETTER,
    VERDICTS,
    comparison_table,
    RunsOnTestSet,
    apply_plan,
    largest_accepted_share,
    replacement_summary,
    verdict,
    write_comparison_table,
    write_replacement_summary,
)
from billetjax.evaluation.bootstrap import resample_weights
from billetjax.evaluation.evaluate import RUN_COLUMNS, evaluate_files, load_metrics, metrics_from_counts
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


# ------------------------------------------------------------------ paired intervals, known by hand


def runs_of(*experiments: np.ndarray, n_resamples: int = 500, seed: int = 0) -> RunsOnTestSet:
    """A RunsOnTestSet of experiments 1, 2, ... from per-billet counts [seeds, billets, k] each (or
    [billets, k] for one seed), resampled with one shared draw of billets, as load_study does."""
    counts = np.stack([e if e.ndim == 3 else e[None] for e in experiments]).astype(np.float64)
    weights = resample_weights(counts.shape[2], n_resamples, seed).astype(np.float64)
    values = metrics_from_counts(counts.sum(2), False)
    resampled = metrics_from_counts(np.einsum("bn,esnk->besk", weights, counts), False)
    return RunsOnTestSet(1, tuple(range(1, len(experiments) + 1)), tuple(range(counts.shape[1])),
                       counts.shape[2], values, resampled)


def paired(runs: RunsOnTestSet, metric: str = "TP"):
    return runs.estimate(metric, [2, 1], lambda y: y[:, 0] - y[:, 1])


def test_constant_shift_has_a_point_interval():
    """The experiment reads exactly one more character on every 10-character billet, on both seeds:
    in every resample TP is 10 points higher and FN 10 lower, and the seeds agree: the interval
    is that point, with no variance from billets or seeds."""
    rng = np.random.default_rng(1)
    reference = rng.integers(2, 9, 30)
    two_seeds = lambda tp: np.stack([billet_counts(tp)] * 2)  # noqa: E731
    runs = runs_of(two_seeds(reference), two_seeds(reference + 1))
    tp, fn = paired(runs, "TP"), paired(runs, "FN")
    assert tp.value == pytest.approx(10.0) and (tp.lo, tp.hi) == pytest.approx((10.0, 10.0))
    assert (fn.lo, fn.hi) == pytest.approx((-10.0, -10.0))
    assert tp.var_billets == pytest.approx(0.0) and tp.var_seeds == pytest.approx(0.0)
    assert tp.covers == "billets and seeds"


def test_seed_part_by_hand():
    """Seed 0 of the experiment reads one more character per billet than the reference, seed 1 the
    same: per-seed differences 10 and 0 points, with no billet variation at all. The seed part is
    the variance of their mean, 50 / 2 = 25 (sd 5), on one degree of freedom: 5 +- 12.706 x 5."""
    reference = np.full(25, 6)
    experiment = np.stack([billet_counts(reference + 1), billet_counts(reference)])
    runs = runs_of(np.stack([billet_counts(reference)] * 2), experiment)
    tp = paired(runs)
    assert tp.value == pytest.approx(5.0) and list(tp.per_seed) == pytest.approx([10.0, 0.0])
    assert tp.var_billets == pytest.approx(0.0) and tp.var_seeds == pytest.approx(25.0)
    assert (tp.lo, tp.hi) == pytest.approx((5.0 - 12.7062047 * 5, 5.0 + 12.7062047 * 5))


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
    tp = paired(runs_of(ref_counts, exp_counts, n_resamples=2000, seed=3))
    assert tp.value == pytest.approx(100 * 20 / 600)
    assert 0 < tp.lo < tp.value < tp.hi
    assert tp.covers == "billets only (one seed)"


def test_no_resamples_no_interval():
    tp = paired(runs_of(billet_counts([5, 5]), billet_counts([5, 6]), n_resamples=0))
    assert tp.value == pytest.approx(5.0)
    assert np.isnan(tp.lo) and tp.covers == "none"


# ------------------------------------------------------------------ the plan


def plan_table(rows: list[tuple]) -> pd.DataFrame:
    """Rows (test_set, metric, synthetic_pct, on_curve, verdict, p_noninferiority) as comparisons
    rows before the plan."""
    return pd.DataFrame([
        {"test_set": t, "metric": m, "synthetic_pct": pct, "on_curve": on, "verdict": v,
         "verdict_adjusted": v, "role": "descriptive" if v == "no verdict" else "secondary", "reason": "",
         "p_noninferiority": p, "p_adjusted": np.nan}
        for t, m, pct, on, v, p in rows])


def test_primary_sequence_stops_at_the_first_failure_and_holm_adjusts_the_rest():
    """Primary TP on set 1: 25 % passes, 50 % fails, so 75 % is not tested even though its own
    interval passes. The secondary rows (p 0.001, 0.02, 0.2) are Holm-adjusted to 0.003, 0.04,
    0.2: the 0.02 row loses its non-inferiority at one-sided 2.5 %; FN keeps its 'no verdict'."""
    table = apply_plan(plan_table([
        (1, "TP", 25, True, "non-inferior", 0.001),
        (1, "TP", 50, True, "inconclusive", 0.3),
        (1, "TP", 75, True, "non-inferior", 0.01),
        (1, "CB", 25, True, "non-inferior", 0.001),
        (2, "TP", 25, True, "non-inferior", 0.02),
        (2, "TP", 50, True, "inconclusive", 0.2),
        (1, "FN", 25, True, "no verdict", np.nan),
    ]), {"metric": "TP", "test_set": 1})
    assert list(table["role"]) == ["primary"] * 3 + ["secondary"] * 3 + ["descriptive"]
    assert list(table["verdict_adjusted"]) == ["non-inferior", "inconclusive", "not tested",
                                               "non-inferior", "inconclusive", "inconclusive", "no verdict"]
    np.testing.assert_allclose(table["p_adjusted"].iloc[3:6], [0.003, 0.04, 0.2])
    assert table["p_adjusted"].iloc[:3].isna().all()
    assert "stopped at 50 %" in table["reason"].iloc[2] and "Holm" in table["reason"].iloc[4]


# ------------------------------------------------------------------ through the metrics files

EXPERIMENTS = {"images": 40, "sets": [{"synthetic_pct": 0, "images_fraction": 1.0},
                                      {"synthetic_pct": 50, "images_fraction": 1.0},
                                      {"synthetic_pct": 0, "images_fraction": 0.25}]}
EVALUATION = {"iou_threshold": 0.5, "score_threshold": 0.5, "bootstrap_samples": 300, "id_pattern": None,
              "id_reading": {"min_confidence": 0.5, "min_score": 0.5, "miss_probability": 0.05, "misread_levels_pct": [0.5]},
              "reference_experiment": 1, "margins": MARGINS, "margin_fraction": None,
              "primary": {"metric": "TP", "test_set": 1}}


@pytest.fixture(scope="module")
def metrics_files(tmp_path_factory, write_evaluation_test_set, controlled_detections):
    """Experiment 1 (reference) with the controlled errors (TP 85), experiment 2 perfect (TP 100),
    experiment 3 (a quarter of the real images) the reference's detections less those of five
    billets (TP 60); two seeds each, on test sets 1 and 3."""
    folder = tmp_path_factory.mktemp("comparisons")
    gt_path = write_evaluation_test_set(folder)
    coco = cc.load(gt_path)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.95}
               for a in coco["annotations"]]
    paths = []
    dropped = {img["id"] for img in coco["images"][:5]}
    fewer = [d for d in controlled_detections(coco) if d["image_id"] not in dropped]
    for experiment, dets in ((1, controlled_detections(coco)), (2, perfect), (3, fewer)):
        for seed in (0, 1):
            for test_set in (1, 3):
                det_path = folder / f"det_{experiment}_{seed}_{test_set}.json"
                det_path.write_text(json.dumps(dets))
                out = folder / "metrics" / f"exp{experiment}" / f"seed{seed}" / f"testset{test_set}.json"
                evaluate_files(gt_path, det_path, out, EVALUATION, 2022, experiment, seed, test_set)
                paths.append(out)
    return folder, paths


def test_comparison_table(metrics_files, table1_of, controlled_detections):
    folder, paths = metrics_files
    table = write_comparison_table(paths, folder / "comparisons.csv", table1_of(EXPERIMENTS), EVALUATION, 2022)
    read = pd.read_csv(folder / "comparisons.csv", keep_default_na=False, na_values=[""])
    assert list(read.columns) == COLUMNS + EXTRA_COLUMNS
    # No ID pattern: id_read_rate_pattern is undefined and left out. mAP@0.5 only on the primary
    # test set (1).
    assert set(read["metric"]) == {"TP", "MC", "FN", "FP", "CB", "id_read_rate", "mAP50"}
    assert len(read) == 2 * 2 * 6 + 2  # test sets x experiments 2, 3 x metrics, + mAP50 on set 1
    assert set(read.loc[read.metric == "mAP50", "test_set"]) == {1}
    # mAP@0.5 x 100: the companion of the primary endpoint, an interval without a verdict. The
    # perfect detections read 100; the reference what pycocotools gives its detections.
    reference_map = 100 * load_metrics(next(p for p in paths if "exp1" in str(p) and "testset1" in str(p)))["metrics"]["mAP50"]
    coco = cc.load(folder / "testset3.json")  # the metrics' own mAP is COCOeval's
    assert reference_map == pytest.approx(100 * map50(coco, controlled_detections(coco)), abs=1e-9)
    companion = read[(read.metric == "mAP50") & (read.experiment == 2)].iloc[0]
    assert companion.value == pytest.approx(100.0) and companion.reference_value == pytest.approx(reference_map, abs=1e-4)
    assert companion.difference == pytest.approx(100.0 - reference_map, abs=1e-4) and 0 < reference_map < 100
    assert companion.lo < companion.difference < companion.hi and companion.lo > 0
    assert companion.verdict == "no verdict" and companion.role == "descriptive"
    assert "companion" in companion.reason
    assert set(read["experiment"]) == {2, 3} and set(read["reference"]) == {1}
    assert list(read["test_set"].unique()) == [1, 3]
    perfect_tp = read[(read.experiment == 2) & (read.metric == "TP")].iloc[0]
    assert perfect_tp.difference == pytest.approx(15.0) and perfect_tp.value == pytest.approx(100.0)
    assert perfect_tp.reference_value == pytest.approx(85.0)
    assert perfect_tp.verdict == "superior" and perfect_tp.lo > 0 and perfect_tp.role == "primary"
    assert perfect_tp.n_seeds == 2 and perfect_tp.difference_seed_sd == 0 and perfect_tp.n_billets == 20
    # Assay sensitivity: the reference reads TP far above experiment 3 (10 real images), so TP has
    # verdicts; the effect is the reference minus experiment 3 on the same billets.
    worse_tp = read[(read.experiment == 3) & (read.metric == "TP")].iloc[0]
    assert perfect_tp.real_effect == pytest.approx(-worse_tp.difference) and perfect_tp.real_effect_lo > 0
    assert worse_tp.verdict == "inferior" and not worse_tp.on_curve and worse_tp.role == "secondary"
    # FN mirrors TP: never a verdict.
    fn = read[read.metric == "FN"]
    assert (fn["verdict"] == "no verdict").all() and (fn["reason"] == "FN mirrors TP").all()
    # Dropping five billets' detections lowers FP too: the reference does not separate from
    # experiment 3 on FP (fewer false detections is better), so FP has no verdict, and says why.
    fp = read[(read.metric == "FP") & (read.test_set == 1)]
    assert (fp["verdict"] == "no verdict").all()
    assert fp["reason"].str.contains("does not separate from experiment 3").all()
    assert fp.iloc[0].difference == pytest.approx(-2.5) and fp.iloc[0].better == "lower"
    # Every verdict is the one its interval and margin give; the margins are the absolute ones.
    for row in table.itertuples():
        assert row.verdict in VERDICTS
        if row.verdict != "no verdict":
            assert row.verdict == verdict(row.lo, row.hi, row.margin, row.metric in LOWER_IS_BETTER)
            assert row.margin == MARGINS[row.metric] and row.margin_source == "absolute"
    assert list(read.drop_duplicates("experiment")["on_curve"]) == [True, False]  # 3 has a quarter of the images


def test_margin_as_a_fraction_of_the_real_data_effect(metrics_files, table1_of):
    """margin_fraction 0.5: each margin is half the reference's lead over its smallest real-only
    row on that test set and metric."""
    _, paths = metrics_files
    table = comparison_table(paths, table1_of(EXPERIMENTS), {**EVALUATION, "margin_fraction": 0.5}, 2022)
    tp = table[(table.metric == "TP") & (table.experiment == 2)]
    for row in tp.itertuples():
        assert row.margin == pytest.approx(0.5 * row.real_effect)
        assert row.margin_source == "fraction of the real-data effect"


def test_a_reference_at_the_floor_gives_no_verdict(table1_of):
    """Every detector reads nothing (the smoke preset's toy training): no metric can show
    non-inferiority of anything, and each row says the reference is at the floor."""
    from billetjax.evaluation.comparisons import comparison_row, sensitivity, smallest_real_row

    experiments = table1_of(EXPERIMENTS)
    nothing = billet_counts(np.zeros(20, dtype=np.int64))
    runs = runs_of(nothing, nothing, nothing)
    sens = sensitivity(runs, "TP", experiments[0], smallest_real_row(experiments, experiments[0]))
    assert not sens.ok and "floor" in sens.reason
    row = comparison_row(runs, "TP", experiments[1], experiments[0], 2.0, "absolute", sens)
    assert row["verdict"] == "no verdict" and "floor" in row["reason"]


def test_comparison_table_refusals(metrics_files, table1_of):
    folder, paths = metrics_files
    with pytest.raises(ValueError, match="reference_experiment = 4"):
        comparison_table(paths, table1_of(EXPERIMENTS), {**EVALUATION, "reference_experiment": 4}, 0)
    one_seed_of_2 = [p for p in paths if not ("exp2" in str(p) and "seed1" in str(p))]
    with pytest.raises(ValueError, match="same seeds"):
        comparison_table(one_seed_of_2, table1_of(EXPERIMENTS), EVALUATION, 0)
    without_3 = [p for p in paths if "exp3" not in str(p)]
    with pytest.raises(ValueError, match=r"no metrics for experiments \[3\]"):
        comparison_table(without_3, table1_of(EXPERIMENTS), EVALUATION, 0)


# ------------------------------------------------------------------ the replacement curve


def curve_table(verdicts: dict[float, str], test_set: int = 1, metric: str = "TP") -> pd.DataFrame:
    return pd.DataFrame([{"experiment": i + 2, "reference": 1, "test_set": test_set, "metric": metric,
                          "margin": 2.0, "margin_source": "absolute", "covers": "billets and seeds",
                          "verdict": v, "verdict_adjusted": v, "role": "secondary", "reason": "",
                          "synthetic_pct": share, "on_curve": True}
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
        curve_table({25: "no verdict"}, test_set=3).assign(reason="the reference reads at the floor (TP 0.0 %)"),
    ])
    sentences = replacement_summary(table, "TP", 0.0, {1: "all", 2: "well visible"})
    qualifier = "(TP, secondary, Holm-adjusted, margin 2.00 points, absolute; 95 % over billets and seeds)"
    assert sentences == [
        f"Up to 75 % synthetic data is non-inferior to all-real on test set 1 (all) {qualifier}.",
        f"No synthetic share is shown non-inferior to all-real on test set 2 (well visible) {qualifier}: "
        "already 25 % synthetic is inconclusive.",
        "No verdict on test set 3 (TP): the reference reads at the floor (TP 0.0 %).",
    ]


def test_summary_file_and_curve_figure(metrics_files, table1_of):
    from billetjax.evaluation.figures import replacement_curve_figure

    folder, paths = metrics_files
    csv = folder / "comparisons_for_figure.csv"
    write_comparison_table(paths, csv, table1_of(EXPERIMENTS), EVALUATION, 2022)
    lines = write_replacement_summary(csv, folder / "summary.txt", "TP", table1_of(EXPERIMENTS), ["all", "well", "hard"],
                                      primary=EVALUATION["primary"])
    text = (folder / "summary.txt").read_text()
    assert lines[0] == "Primary endpoint (stated in the config before the study): TP on test set 1 (all)."
    assert lines[1].startswith("Up to 50 % synthetic data is non-inferior to all-real on test set 1 (all) "
                               "(TP, primary endpoint, margin 2.00 points")
    assert text.startswith(lines[0]) and "test set 3 (hard)" in text and "CB" in text
    replacement_curve_figure(csv, folder / "curve.png", ["all", "well", "hard"], "TP")
    png = (folder / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
