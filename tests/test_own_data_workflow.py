"""A user's own data through Snakemake, as users arrive: `data.source: coco` with a Label Studio
export (train) and a Roboflow export (test) of another renderer's frames (16:9, OpenCV's fonts,
digits and letters, box-only labels), the smoke preset, to the tables.

It starts in a copy of the smoke study's working directory, as a user who ran the demo and then
switched to their data: nothing trained on the simulator may be reused.
"""

import json
import shutil

import pandas as pd
import pytest
import yaml

from billetjax import coco as cc
from support.exports import TEST_MIX, TRAIN_MIX, render_set, write_labelstudio, write_roboflow

pytestmark = pytest.mark.slow

FRAME = (256, 144)  # 16:9 camera frames, padded to the smoke preset's 128² images


@pytest.fixture(scope="module")
def own_study(smoke_study, tmp_path_factory, run_snakemake, smoke_preset):
    workdir = tmp_path_factory.mktemp("own") / "study"
    shutil.copytree(smoke_study, workdir, symlinks=True)
    exports = workdir.parent / "exports"
    train = write_labelstudio(render_set(40, seed=3, mix=TRAIN_MIX, size=FRAME, letters=True),
                              exports / "labelstudio", box_only=True)
    test = write_roboflow(render_set(16, seed=3, mix=TEST_MIX, start=1000, size=FRAME, letters=True),
                          exports / "roboflow", split="test", box_only=True)
    config = {"data": {"source": "coco", "coco": {"train": str(train), "train_images": str(train.parent),
                                                  "test": str(test), "test_images": str(test.parent)}},
              "evaluation": {"id_pattern": None}}
    (workdir / "own.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(workdir, "--configfile", str(smoke_preset), str(workdir / "own.yaml"), "--cores", "2",
                           "--resources", "gpu=1", "--retries", "0")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return {"workdir": workdir, "train": train, "test": test}


def test_tables_come_out(own_study):
    tables = own_study["workdir"] / "results/tables"
    for k in range(1, 6):
        table = pd.read_csv(tables / f"testset{k}.csv")
        assert table["experiment"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8] and (table["test_set"] == k).all()
        assert table[["TP", "MC", "FN", "FP", "CB"]].notna().all().all()


def test_the_users_categories_and_ids_are_kept(own_study):
    """Label Studio numbers from 0 and Roboflow from 1 (with its super-category 0): the pools and
    every detection carry the train export's ids and names, matched by name."""
    workdir = own_study["workdir"]
    studio = json.loads(own_study["train"].read_text())
    used = {a["category_id"] for a in studio["annotations"]}
    expected = sorted(({"id": c["id"], "name": c["name"]} for c in studio["categories"] if c["id"] in used),
                      key=lambda c: c["id"])
    assert any(not c["name"].isdigit() for c in expected)  # letters are among them
    for pool in ("train_pool", "test_pool"):
        categories = cc.load(workdir / f"results/data/real/{pool}.json")["categories"]
        assert [{"id": c["id"], "name": c["name"]} for c in categories] == expected
    detections = json.loads((workdir / "results/detections/exp1/seed0/testset1.json").read_text())
    assert {d["category_id"] for d in detections} <= {c["id"] for c in expected}
    # The synthetic pool draws the user's characters, under the user's ids.
    synthetic = cc.load(workdir / "results/synth/gan/fit0/pool.json")
    assert {a["category_id"] for a in synthetic["annotations"]} <= {c["id"] for c in expected}


def test_box_only_labels_give_segmented_masks_and_their_figure(own_study):
    workdir = own_study["workdir"]
    pool = cc.load(workdir / "results/data/real/train_pool.json")
    assert pool["annotations"] and all(a["segmentation"] == [] for a in pool["annotations"])
    assert (workdir / "results/figures/box_masks.png").read_bytes()[:4] == b"\x89PNG"


def test_nothing_trained_on_the_simulator_is_reused(own_study, smoke_study):
    """The demo's GAN state and detector weights lay in the working directory; after the switch
    the GAN and every detector trained again on the user's data."""
    workdir = own_study["workdir"]
    for path in ("results/gan/fit0/generator_step20.msgpack", "results/detector/exp1/seed0/params.msgpack"):
        assert (workdir / path).read_bytes() != (smoke_study / path).read_bytes(), path
    # The GAN's kept state was recognised as another run's, said so, and was not resumed.
    gan_log = (workdir / "logs/gan/train_fit0.log").read_text()
    assert "content changed" in gan_log and "resuming" not in gan_log.split("content changed")[-1]
