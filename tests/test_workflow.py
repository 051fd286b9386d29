"""The workflow as users run it: config validation and the jobs it plans (dry runs in an empty
working directory, so nothing of a checkout's own results/ counts)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def snakemake(tmp_path, run_snakemake):
    """A function: the repository's workflow in an empty working directory; the CompletedProcess."""
    return lambda *args: run_snakemake(tmp_path / "work", *args, timeout=600)


@pytest.fixture
def planned_jobs(snakemake, job_counts):
    """A function: jobs per rule of a dry run with the given arguments."""

    def plan(*args) -> dict[str, int]:
        result = snakemake(*args, "-n", "--quiet", "rules")
        assert result.returncode == 0, result.stdout + result.stderr
        return job_counts(result.stdout + result.stderr)

    return plan


def test_lint_is_clean(snakemake):
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "setting, key",
    [("image_size_px=10", "image_size_px"), ("seed=-1", "seed")],
)
def test_out_of_range_config_is_refused(snakemake, setting, key):
    result = snakemake("-n", "--config", setting)
    assert result.returncode != 0
    assert "validat" in (result.stdout + result.stderr).lower() and key in result.stdout + result.stderr


def test_default_plan_has_the_data_stage(planned_jobs):
    jobs = planned_jobs()
    assert jobs["real_pools"] == 1 and jobs["test_sets"] == 1 and jobs["stamp_pairs"] == 1


def test_paper_preset_plans_the_papers_jobs(planned_jobs):
    jobs = planned_jobs("--configfile", str(ROOT / "presets/paper.yaml"))
    assert jobs["detector_train"] == 8  # Table 1 and the dose-response rows at 1/2 and 3/4 of N real images
    assert jobs["gan_samples"] == 8 and jobs["synth_stamps_gan"] == 8  # 40,000 steps, every 5,000
    assert jobs["evaluate_detections"] == 40  # 8 experiments x 5 test sets
    assert jobs["gan_train"] == 1 and jobs["exchange_rate"] == 1  # one seed: one synthesis fit
    assert jobs["table_testset"] == 5 and jobs["table3"] == 1


def test_one_table_builds_only_what_it_needs(planned_jobs):
    jobs = planned_jobs("results/tables/testset3.csv")
    # 8 experiments x 3 seeds; one prediction job per detector writes every test set's detections
    assert jobs["evaluate_detections"] == 24 and jobs["detector_predict"] == 24 and jobs["detector_train"] == 24
    assert jobs["table_testset"] == 1 and "table3" not in jobs and "figure_table3" not in jobs
    assert "gan_samples" not in jobs  # figures of other stages are not needed for a table


def test_an_added_experiment_row_is_trained_and_evaluated(tmp_path, planned_jobs):
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "experiments:\n  sets:\n"
        + "".join(f"    - {{synthetic_pct: {p}}}\n" for p in (0, 25, 50, 75, 90, 100))
        + "    - {synthetic_pct: 0, images_fraction: 0.25}\n"
    )
    jobs = planned_jobs("--configfile", str(extra))
    assert jobs["detector_train"] == 7 * 3 and jobs["evaluate_detections"] == 7 * 3 * 5


def test_a_study_without_synthetic_images_trains_no_gan_and_needs_no_glyphs(planned_jobs, tmp_path):
    """Every experiment 0 % synthetic: no GAN, no synthesis, so a user's categories without a glyph
    (here '§') pass the parse-time check."""
    import json

    import yaml

    export = {"images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in (1, 2, 3, 4)],
              "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 9, 9]} for i in (1, 2, 3, 4)],
              "categories": [{"id": 1, "name": "§"}]}
    (tmp_path / "train.json").write_text(json.dumps(export))
    config = {"data": {"source": "coco", "coco": {"train": str(tmp_path / "train.json")}},
              "experiments": {"images": 4, "sets": [{"synthetic_pct": 0}, {"synthetic_pct": 0, "images_fraction": 0.5}]},
              "evaluation": {"id_pattern": None}}
    (tmp_path / "real_only.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_jobs("--configfile", str(tmp_path / "real_only.yaml"))
    assert jobs["detector_train"] == 2 * 3 and jobs["table_testset"] == 5
    assert not {"gan_train", "synth_pool", "synth_stamps_gan", "stamp_pairs", "surfaces"} & set(jobs)


def test_rows_with_another_source_plan_its_pool_and_only_the_stamps_they_need(planned_jobs, tmp_path):
    both = tmp_path / "both.yaml"
    both.write_text("experiments:\n  sets:\n    - {synthetic_pct: 0}\n    - {synthetic_pct: 50}\n"
                    "    - {synthetic_pct: 50, synthetic_source: classic}\n")
    jobs = planned_jobs("--configfile", str(both))
    # one GAN fit and one pool of each renderer per seed (synth.per_seed)
    assert jobs["synth_pool"] == 2 * 3 and jobs["gan_train"] == 3 and jobs["detector_train"] == 3 * 3
    classic_only = tmp_path / "classic_only.yaml"
    classic_only.write_text("experiments:\n  sets:\n    - {synthetic_pct: 0}\n"
                            "    - {synthetic_pct: 50, synthetic_source: classic}\n")
    jobs = planned_jobs("--configfile", str(classic_only))
    assert jobs["synth_pool"] == 3 and jobs["synth_stamps_classic"] == 3 and jobs["domain_gap"] == 1
    assert not {"gan_train", "gan_samples", "synth_stamps_gan"} & set(jobs)


def test_one_synthesis_fit_per_seed_paired_with_the_detectors(planned_jobs, tmp_path, snakemake):
    """synth.per_seed (the default): three seeds, three GAN fits and pools, and the detectors of seed
    s train on fit s's pool; with per_seed false one fit serves every seed."""
    jobs = planned_jobs()
    # three GAN pools, and the first fit's classic pool for the feature-space domain gap
    assert jobs["gan_train"] == 3 and jobs["synth_pool"] == 3 + 1 and jobs["synth_stamps_gan"] == 3 * 3
    result = snakemake("-n", "results/experiments/exp3/seed2/train.json")
    assert "results/synth/gan/fit2/pool.json" in result.stdout and "fit0/pool.json" not in result.stdout
    one = tmp_path / "one_fit.yaml"
    one.write_text("synth: {per_seed: false}\n")
    jobs = planned_jobs("--configfile", str(one))
    assert jobs["gan_train"] == 1 and jobs["synth_pool"] == 1 + 1 and jobs["detector_train"] == 8 * 3


def test_the_gan_chain_outranks_the_trainings(snakemake):
    # The chain to the synthetic pool is the critical path: every synthetic row waits for it, the
    # real rows' trainings can run any time. Snakemake starts the ready job of higher priority
    # first (a dry run states each job's priority where it is not the default 0).
    result = snakemake("-n", "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = []  # [rule, priority] per job, in the dry run's order
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith(("rule ", "localrule ")):
            jobs.append([line.split()[-1].rstrip(":"), 0])
        elif line.strip().startswith("priority:") and jobs:
            jobs[-1][1] = int(line.split(":")[1])
    priority: dict[str, set[int]] = {}
    for rule, value in jobs:
        priority.setdefault(rule, set()).add(value)
    assert priority["detector_train"] == {0}
    for chain in ("stamp_pairs", "gan_train", "synth_stamps_gan", "synth_pool"):
        assert min(priority[chain]) > max(priority["detector_train"]), (chain, priority[chain])
