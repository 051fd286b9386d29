"""The experiment axes through Snakemake, as users arrive: rows with another synthetic source, a
sequential strategy, a schedule, counts and oversampled hard images added to the smoke study.

It starts in a copy of the smoke study's working directory, as a user who ran the study and then
added rows: the new rows are trained and compared, and the six existing experiments are neither
rebuilt nor retrained.
"""

import json
import shutil

import pandas as pd
import pytest
import yaml

from billetjax import coco as cc

pytestmark = pytest.mark.slow

SMOKE_ROWS = [{"synthetic_pct": p} for p in (0, 25, 50, 75, 100)] + [{"synthetic_pct": 0, "images_fraction": 0.25}]
NEW_ROWS = [
    {"synthetic_pct": 50, "synthetic_source": "classic"},  # 7
    {"synthetic_pct": 50, "strategy": "sequential"},  # 8
    {"synthetic_pct": 50, "synthetic_schedule": [75, 25]},  # 9
    {"real_images": 6, "synthetic_images": 12},  # 10
    {"synthetic_pct": 0, "oversample_hard": True},  # 11
]


@pytest.fixture(scope="module")
def axes_study(smoke_study, tmp_path_factory, run_snakemake, smoke_preset):
    workdir = tmp_path_factory.mktemp("axes") / "study"
    shutil.copytree(smoke_study, workdir, symlinks=True)
    trained = {k: (workdir / f"results/detector/exp{k}/seed0/params.msgpack").stat().st_mtime_ns for k in range(1, 7)}
    sets = {k: (workdir / f"results/experiments/exp{k}/seed0/train.json").stat().st_mtime_ns for k in range(1, 7)}
    (workdir / "axes.yaml").write_text(yaml.safe_dump({"experiments": {"sets": SMOKE_ROWS + NEW_ROWS}}))
    result = run_snakemake(workdir, "--configfile", str(smoke_preset), str(workdir / "axes.yaml"), "--cores", "2",
                           "--resources", "gpu=1", "--retries", "0")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return {"workdir": workdir, "trained": trained, "sets": sets, "stdout": result.stdout + result.stderr}


def _train_set(workdir, k):
    return cc.load(workdir / f"results/experiments/exp{k}/seed0/train.json")


def test_existing_experiments_are_left_alone(axes_study):
    workdir = axes_study["workdir"]
    for k, mtime in axes_study["trained"].items():
        assert (workdir / f"results/detector/exp{k}/seed0/params.msgpack").stat().st_mtime_ns == mtime, k
    for k, mtime in axes_study["sets"].items():
        assert (workdir / f"results/experiments/exp{k}/seed0/train.json").stat().st_mtime_ns == mtime, k


def test_every_row_is_in_the_tables_and_comparisons_with_its_label(axes_study):
    workdir = axes_study["workdir"]
    table = pd.read_csv(workdir / "results/tables/testset1.csv")
    assert table["experiment"].tolist() == list(range(1, 12))
    assert table["label"].tolist()[6:] == [
        "50 % synthetic (classic) of 24", "50 % synthetic of 24, sequential", "50 % synthetic of 24, schedule 75->25 %",
        "6 real + 12 synthetic", "0 % synthetic of 24, hard real oversampled"]
    comparisons = pd.read_csv(workdir / "results/tables/comparisons.csv")
    assert set(comparisons["experiment"]) == set(range(2, 12))
    # Only plain rows of the reference's size draw the replacement curve.
    on_curve = set(comparisons.loc[comparisons["on_curve"], "experiment"])
    assert on_curve == {2, 3, 4, 5}


def test_classic_row_mixes_the_classic_pool_in(axes_study):
    workdir = axes_study["workdir"]
    synthetic = [i for i in _train_set(workdir, 7)["images"] if i["source"] == "synthetic"]
    gan = [i for i in _train_set(workdir, 3)["images"] if i["source"] == "synthetic"]
    assert synthetic and all("synth/classic/" in i["file_name"] for i in synthetic)
    assert all("synth/gan/" in i["file_name"] for i in gan)
    # The two pools are planned alike (surfaces, characters, layouts): only the stamps differ.
    classic_pool = cc.load(workdir / "results/synth/classic/fit0/pool.json")
    gan_pool = cc.load(workdir / "results/synth/gan/fit0/pool.json")
    assert [i["billet_id"] for i in classic_pool["images"]] == [i["billet_id"] for i in gan_pool["images"]]
    assert [i["source_image_id"] for i in synthetic] == [i["source_image_id"] for i in gan]


def test_plans_reach_the_detector(axes_study):
    workdir = axes_study["workdir"]
    assert _train_set(workdir, 8)["info"]["batch_plan"] == {"strategy": "sequential", "synthetic_schedule": None}
    assert _train_set(workdir, 9)["info"]["batch_plan"] == {"strategy": "mix", "synthetic_schedule": [75, 25]}
    assert "batch_plan" not in _train_set(workdir, 3)["info"]
    for k in (8, 9):
        log = (workdir / f"logs/detector/train_exp{k}_seed0.log").read_text()
        assert "batch plan" in log
    assert "batch plan" not in (workdir / "logs/detector/train_exp3_seed0.log").read_text()


def test_counts_and_oversampling_make_the_sets_they_ask_for(axes_study):
    workdir = axes_study["workdir"]
    counted = _train_set(workdir, 10)["images"] + cc.load(workdir / "results/experiments/exp10/seed0/val.json")["images"]
    assert sum(i["source"] == "real" for i in counted) == 6
    assert sum(i["source"] == "synthetic" for i in counted) == 12
    over = _train_set(workdir, 11)["images"]
    plain = _train_set(workdir, 1)["images"]
    assert any("repeat_of" in i for i in over)
    assert {i["source_image_id"] for i in over} == {i["source_image_id"] for i in plain}
    hard = sum(i["visibility"] != "well" for i in over) / len(over)
    assert hard == pytest.approx(0.5, abs=1 / len(over))
    info = json.loads((workdir / "results/experiments/exp11/seed0/train.json").read_text())["info"]
    assert "batch_plan" not in info
