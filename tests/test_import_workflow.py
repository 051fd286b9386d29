"""The import of a user's exports through Snakemake, as users meet it: a changed image, glyph
file or annotation file plans the import again (a touched one does not), a refusal is one message
block with no traceback above it, and a config whose consequences would fail later is refused by
`snakemake -n`. One working directory, the smoke preset, a Label Studio train export and a
Roboflow test export (tests/support/exports.py); tests/sweep_import.py runs 52 corruptions."""

import json
import os

import cv2
import pytest
import yaml

from support.exports import TEST_MIX, TRAIN_MIX, render_set, write_labelstudio, write_roboflow

pytestmark = pytest.mark.slow

FRAME = (192, 108)
TARGET = "results/data/testsets/testset1.json"
GLYPHS = {"glyphs": {"0": {"exterior": [[0.0, 0.0], [0.6, 0.0], [0.6, 1.0], [0.0, 1.0]],
                           "holes": [[[0.15, 0.15], [0.45, 0.15], [0.45, 0.85], [0.15, 0.85]]]}}}


@pytest.fixture(scope="module")
def study(tmp_path_factory, run_snakemake, smoke_preset):
    workdir = tmp_path_factory.mktemp("import_workflow")
    train = write_labelstudio(render_set(10, seed=8, mix=TRAIN_MIX, size=FRAME, letters=False), workdir / "ls")
    test = write_roboflow(render_set(6, seed=8, mix=TEST_MIX, start=300, size=FRAME, letters=False), workdir / "rf",
                          split="test")
    glyphs = workdir / "plant_glyphs.json"
    glyphs.write_text(json.dumps(GLYPHS))
    config = {"data": {"source": "coco", "coco": {"train": str(train), "train_images": str(train.parent),
                                                  "test": str(test), "test_images": str(test.parent)}},
              "synth": {"glyphs": str(glyphs)}, "experiments": {"images": 8},
              "detector": {"max_boxes": 24}, "evaluation": {"id_pattern": None}}
    own = workdir / "own.yaml"
    own.write_text(yaml.safe_dump(config))

    def snakemake(*args, extra=()):
        return run_snakemake(workdir, "--configfile", str(smoke_preset), str(own), *extra, *args)

    done = snakemake("--cores", "1", "--retries", "0", TARGET)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return {"workdir": workdir, "train": train, "test": test, "glyphs": glyphs, "snakemake": snakemake}


def planned(result) -> bool:
    """Whether a dry run plans the import job."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return "real_pools" in result.stdout


def test_changed_inputs_plan_the_import_again(study):
    snakemake, train = study["snakemake"], study["train"]
    dry = lambda: snakemake("-n", TARGET)
    assert not planned(dry())
    image = train.parent / json.loads(train.read_text())["images"][3]["file_name"]
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))  # touched: same content
    assert not planned(dry())
    original = image.read_bytes()
    cv2.imwrite(str(image), cv2.imread(str(image))[:, ::-1])  # flipped in place, old time stamp
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned(dry())
    image.write_bytes(original)
    assert not planned(dry())
    glyphs = study["glyphs"]
    before = glyphs.read_text()
    glyphs.write_text(before.replace("0.85]]]", "0.8]]]"))  # the plant's glyph file edited
    assert planned(dry())
    glyphs.write_text(before)
    assert not planned(dry())


def test_a_refusal_is_one_message_block_without_a_traceback_above(study):
    snakemake, test = study["snakemake"], study["test"]
    original = test.read_text()
    data = json.loads(original)
    ann = data["annotations"][2]
    ann["segmentation"] = [[v + (0 if i % 2 == 0 else 90) for i, v in enumerate(p)] for p in ann["segmentation"]]
    test.write_text(json.dumps(data))
    try:
        result = snakemake("--cores", "1", "--retries", "0", TARGET)
    finally:
        test.write_text(original)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    block = output[output.index("Your data was refused"):]
    assert "Traceback" not in output[:output.index("Your data was refused")]
    assert f"{test}: image id {ann['image_id']}" in block and f"annotation id {ann['id']}" in block
    assert "outside the 192x108 image" in block and "Fix: redraw the outline" in block
    # The traceback stays in the job's log, below the message.
    log = (study["workdir"] / "logs/data/real_pools.log").read_text()
    assert log.rindex("Your data was refused") < log.rindex("importer.py")


def test_the_dry_run_refuses_a_study_larger_than_the_users_pool(study, tmp_path):
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump({"experiments": {"images": 40}, "synth": {"images": 40}}))
    result = study["snakemake"]("-n", TARGET, extra=[str(bigger)])
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"data.coco.train ({study['train']}) has 10 images, but experiment 1 draws 40 real images" in output
    assert "fix: lower experiments.images" in output and "data.simulate" not in output
