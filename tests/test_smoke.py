"""The whole study end to end at toy size (tests/presets/smoke.yaml), as `make run` runs it.

Checks that every table and figure comes out well formed, that the tables' counts agree with the
files of the stages before them (test sets, experiment sets, detections), that every job Snakemake
plans for the preset ran with its log and benchmark, and that the same config run twice gives
identical tables (determinism on the CPU).
"""

import json
import re
from collections import Counter

import pandas as pd
import pytest

COLUMNS = ["experiment", "synthetic_pct", "real_pct", "n_images", "test_set", "TP", "MC", "FN", "FP", "CB"]
FIGURES = ["real_samples.png", "synthetic_samples.png", "gan_losses.png", "gan_samples_step10.png",
           "gan_samples_step20.png", "table3.png", "training_curves.png", "detections_gallery.png",
           "replacement_curve.png", "dose_response.png", "id_read_curve.png"]
# Whole-ID reading (docs/id-reading.md): extra columns after the contract's, per decoder.
ID_COLUMNS = ["id_read_rate", "id_read_rate_pattern", "id_read_rate_lexicon"] + [
    f"id_{o}_{v}" for v in ("plain", "pattern", "lexicon") for o in ("read", "misread", "reject")] + [
    f"id_read_{v}_at_{x}" for v in ("plain", "pattern", "lexicon") for x in ("0.1", "0.5")]

# The smoke preset's test pool: 4 well, 2 poor, 2 partial billets; the default test sets are all,
# well, poor or partial, poor, partial.
TEST_SET_IMAGES = [8, 4, 4, 2, 2]
SCORE_THRESHOLD = 0.5  # evaluation.score_threshold of config.yaml (the preset keeps it)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(smoke_study):
    return smoke_study


def test_tables_are_well_formed(study):
    tables = study / "results/tables"
    for k in range(1, 6):
        table = pd.read_csv(tables / f"testset{k}.csv")
        assert list(table.columns[: len(COLUMNS)]) == COLUMNS
        assert table["experiment"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
        assert table["synthetic_pct"].tolist() == [0, 25, 50, 75, 100, 0, 0, 0]
        assert table["n_images"].tolist() == [24] * 5 + [6, 12, 18]  # the real-only rows of the dose curve
        assert (table["test_set"] == k).all()
        metrics = table[["TP", "MC", "FN", "FP", "CB"]]
        assert metrics.notna().all().all() and (metrics >= 0).all().all()
        # A character is matched at most once: found (TP or MC) is at most all of them.
        assert (table["TP"] + table["MC"] <= 100 + 1e-6).all()
        assert set(ID_COLUMNS) <= set(table.columns)
        # the simulator writes a lexicon and config.yaml a grammar: every decoder is measured
        assert table[ID_COLUMNS].notna().all().all()
        for v in ("plain", "pattern", "lexicon"):
            outcomes = table[[f"id_{o}_{v}" for o in ("read", "misread", "reject")]].sum(axis=1)
            assert outcomes.tolist() == pytest.approx([100.0] * len(table))
    table3 = pd.read_csv(tables / "table3.csv")
    assert len(table3) == 40
    assert table3["test_set"].tolist() == sorted(table3["test_set"].tolist())
    stats = pd.read_csv(tables / "data_statistics.csv")
    assert {"train_pool", "test_pool", "testset1"} <= set(stats["dataset"])


def test_table_counts_agree_with_the_stages_before(study):
    """Counts in the tables against the files that went in, counted here: the test sets' images,
    billets and characters, the experiment sets' images, and the detections kept by the score
    threshold (each one a TP, an MC or an FP, all as shares of the test set's characters)."""
    results = study / "results"
    for k in range(1, 6):
        table = pd.read_csv(results / f"tables/testset{k}.csv")
        truth = json.loads((results / f"data/testsets/testset{k}.json").read_text())
        billets = {a["image_id"] for a in truth["annotations"]}
        assert len(truth["images"]) == TEST_SET_IMAGES[k - 1]
        assert (table["n_test_images"] == len(truth["images"])).all()
        assert (table["n_billets"] == len(billets)).all()
        assert (table["n_characters"] == len(truth["annotations"])).all()
        for row in table.itertuples():
            experiment = row.experiment
            images = sum(len(json.loads((results / f"experiments/exp{experiment}/seed0/{part}.json").read_text())["images"])
                         for part in ("train", "val"))
            assert images == row.n_images, f"experiment {experiment}"
            detections = json.loads((results / f"detections/exp{experiment}/seed0/testset{k}.json").read_text())
            kept = sum(d["score"] >= SCORE_THRESHOLD for d in detections)
            assert (row.TP + row.MC + row.FP) * row.n_characters / 100 == pytest.approx(kept, abs=0.01), \
                f"experiment {experiment}, test set {k}"


def test_the_answer_of_a_reference_at_the_floor(study):
    """The toy detectors of the smoke preset read next to nothing: the comparisons name the primary
    endpoint and the plan's columns, but give no verdict at all, saying why, and the summary does
    not claim that anything can replace real data. The exchange rate prices every row with
    synthetic images on the real-only curve of 6, 12, 18 and 24 real images."""
    from billetjax.evaluation.comparisons import COLUMNS as COMPARISON_COLUMNS
    from billetjax.evaluation.exchange import COLUMNS as EXCHANGE_COLUMNS

    tables = study / "results/tables"
    comparisons = pd.read_csv(tables / "comparisons.csv", keep_default_na=False, na_values=[""])
    assert list(comparisons.columns[: len(COMPARISON_COLUMNS)]) == COMPARISON_COLUMNS
    assert {"role", "p_adjusted", "verdict_adjusted", "var_billets", "var_seeds", "covers"} <= set(comparisons.columns)
    assert (comparisons["verdict"] == "no verdict").all()
    assert comparisons["reason"].str.contains("floor|does not separate|mirrors|companion").all()
    # mAP@0.5, the primary endpoint's threshold-free companion: on the primary test set only
    companion = comparisons[comparisons["metric"] == "mAP50"]
    assert set(companion["test_set"]) == {1} and companion["reason"].str.contains("companion").all()
    assert (comparisons["covers"].isin(["billets only (one seed)", "none"])).all()  # one seed
    summary = (tables / "replacement_summary.txt").read_text()
    assert summary.startswith("Primary endpoint (stated in the config before the study): TP on test set 1")
    assert "No verdict on test set 1" in summary and "synthetic data is non-inferior" not in summary
    exchange = pd.read_csv(tables / "exchange_rate.csv", keep_default_na=False, na_values=[""])
    assert list(exchange.columns[: len(EXCHANGE_COLUMNS)]) == EXCHANGE_COLUMNS
    assert set(exchange["experiment"]) == {2, 3, 4, 5} and set(exchange["test_set"]) == {1, 2, 3, 4, 5}
    assert (exchange["curve_experiments"] == "6 7 8 1").all()
    priced = exchange[exchange["real_equivalent"].notna() & exchange["lo"].notna()]
    assert (exchange["real_equivalent"].notna() | (exchange["note"] != "")).all()
    assert ((priced["lo"] <= priced["real_equivalent"]) & (priced["real_equivalent"] <= priced["hi"])).all()


def test_the_feature_space_gap_ranks_every_pool(study):
    """The GAN's pool (whole and per checkpoint) and the classic renderer's, against the real test
    characters in the all-real detector's feature space."""
    from billetjax.evaluation.feature_gap import COLUMNS as GAP_COLUMNS

    gap = pd.read_csv(study / "results/tables/domain_gap_features.csv", keep_default_na=False, na_values=[""])
    assert list(gap.columns) == GAP_COLUMNS
    assert set(zip(gap["method"], gap["checkpoint"].astype(str))) == {("gan", "all"), ("gan", "10"), ("gan", "20"),
                                                                      ("classic", "all")}
    assert (gap["n_real"] > 0).all() and (gap["n_synthetic"] > 0).all()
    assert gap[["precision", "recall", "tstr_accuracy"]].apply(lambda c: c.between(0, 1)).all().all()


def test_figures_exist_and_are_pngs(study):
    for name in FIGURES:
        path = study / "results/figures" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert path.stat().st_size > 10_000, name


def planned_jobs(output: str) -> list[dict]:
    """Every job of a dry run's output: its rule, log files and benchmark file (None if none)."""
    jobs = []
    for line in output.splitlines():
        m = re.fullmatch(r"(?:local)?rule (\w+):", line.strip()) if not line.startswith(" ") else None
        if m:
            jobs.append({"rule": m.group(1), "log": [], "benchmark": None})
        elif jobs and line.startswith("    log: "):
            jobs[-1]["log"] = line.split(": ", 1)[1].split(", ")
        elif jobs and line.startswith("    benchmark: "):
            jobs[-1]["benchmark"] = line.split(": ", 1)[1]
    return jobs


def test_every_job_logged_and_timed(study, tmp_path, run_snakemake, smoke_preset, job_counts):
    """The jobs a dry run of the preset plans (in an empty directory) are the jobs that ran: per
    rule, every planned job left its log and its benchmark, and no other log or benchmark exists."""
    result = run_snakemake(tmp_path / "plan", "--configfile", str(smoke_preset), "-n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    jobs = planned_jobs(output)
    table = job_counts(output)
    assert Counter(job["rule"] for job in jobs) == table, "job list and job table disagree"
    assert table.pop("all") == 1
    for rule, count in table.items():
        rule_jobs = [job for job in jobs if job["rule"] == rule]
        logs = [log for job in rule_jobs for log in job["log"]]
        benchmarks = [job["benchmark"] for job in rule_jobs]
        assert len(logs) == count and None not in benchmarks, f"rule {rule}: a job without log or benchmark"
        missing = [path for path in logs + benchmarks if not (study / path).is_file()]
        assert not missing, f"rule {rule}: {len(missing)} of {count} jobs did not leave {missing[:3]}"
        for path in benchmarks:
            assert (study / path).read_text().startswith("s\t"), f"rule {rule}: {path} is not a benchmark"
    planned_logs = {log for job in jobs for log in job["log"]}
    planned_benchmarks = {job["benchmark"] for job in jobs if job["benchmark"]}
    assert {str(p.relative_to(study)) for p in (study / "logs").rglob("*.log")} == planned_logs
    assert {str(p.relative_to(study)) for p in (study / "benchmarks").rglob("*.tsv")} == planned_benchmarks
    train_log = (study / "logs/detector/train_exp1_seed0.log").read_text()
    assert "steps/s" in train_log and "anchor sizes" in train_log


def test_same_config_same_tables(study, tmp_path, run_snakemake, smoke_preset):
    again = tmp_path / "again"
    result = run_snakemake(again, "--configfile", str(smoke_preset), "--cores", "2", "--resources", "gpu=1", "--retries", "0")
    assert result.returncode == 0, result.stderr[-8000:]
    for k in range(1, 6):
        first = (study / f"results/tables/testset{k}.csv").read_bytes()
        assert (again / f"results/tables/testset{k}.csv").read_bytes() == first, f"testset{k}.csv differs"
