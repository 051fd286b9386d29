"""Reading new frames through Snakemake on the smoke preset: `read.images` pointing at a folder of
foreign frames (640 x 360 JPEGs, one stored turned with an EXIF orientation, bad files beside
them) gives every file of results/read/ and the exported reader, training the detector first; and
asking for results/read/ without `read.images` is refused before any job, naming the key."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from support.exports import corrupt, encode, render_frame

READ_FILES = ["reads.csv", "detections.json", "labelstudio_tasks.json", "cvat_coco.json", "to_label_first.csv",
              "least_certain.png"]


def write_frames(folder: Path) -> dict[str, str]:
    """Foreign frames and bad files; the status each should get."""
    folder.mkdir(parents=True)
    expected = {}
    for i in range(4):
        data, ext = encode(render_frame(11, i), jpeg=True, exif_orientation=6 if i == 1 else None)
        (folder / f"frame{i}{ext}").write_bytes(data)
        expected[f"frame{i}{ext}"] = "read"
    (folder / "cut.jpg").write_bytes(encode(render_frame(11, 9), jpeg=True)[0])
    corrupt(folder / "cut.jpg", "header")
    (folder / "empty.jpg").write_bytes(b"")
    expected.update({"cut.jpg": "corrupt", "empty.jpg": "empty"})
    return expected


@pytest.mark.slow
def test_reading_frames_through_snakemake(tmp_path, run_snakemake, smoke_preset):
    frames = tmp_path / "frames"
    expected = write_frames(frames)
    overlay = tmp_path / "read.yaml"
    # every detection of the briefly trained smoke detector counts, so that the pre-labels carry boxes
    overlay.write_text(yaml.safe_dump({"read": {"images": str(frames), "label_studio": {"from_name": "chars"}},
                                       "evaluation": {"score_threshold": 0.0}}))
    work = tmp_path / "work"
    dry = run_snakemake(work, "-n", "--configfile", str(smoke_preset), str(overlay))
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "read_frames" in dry.stdout and "reader_export" in dry.stdout  # part of `all` once read.images is set
    done = run_snakemake(work, *[f"results/read/{name}" for name in READ_FILES], "--configfile", str(smoke_preset),
                         str(overlay), "--cores", "2", "--resources", "gpu=1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    out = work / "results/read"
    assert all((out / name).is_file() and (out / name).stat().st_size > 0 for name in READ_FILES)
    reader = work / "results/detector/exp1/seed0/reader"
    meta = json.loads((reader / "reader.json").read_text())
    assert [c["name"] for c in meta["categories"]] == [str(d) for d in range(10)]
    assert meta["input"]["size_px"] == 128 and "cpu" in meta["platforms"]
    assert meta["preprocessing"]["fit"] == "pad" and meta["detector"] == {
        "params": "results/detector/exp1/seed0/params.msgpack", "experiment": 1, "seed": 0}

    with open(out / "reads.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert {name: r["status"] for name, r in rows.items()} == expected
    for name, row in rows.items():
        if row["status"] == "read":
            assert (row["width"], row["height"]) == ("640", "360") and row["decoder"] == "pattern"
            assert row["id_valid"] in ("True", "False") and row["n_characters"].isdigit()
        else:
            assert row["message"] and row["billet_id"] == ""

    detections = json.loads((out / "detections.json").read_text())
    cvat = json.loads((out / "cvat_coco.json").read_text())
    assert [im["file_name"] for im in cvat["images"]] == [n for n in sorted(expected) if expected[n] == "read"]
    ids = {im["id"] for im in cvat["images"]}
    assert detections and {d["image_id"] for d in detections} <= ids
    assert {d["category_id"] for d in detections} <= {c["id"] for c in cvat["categories"]}
    assert len(cvat["annotations"]) == len(detections)
    tasks = json.loads((out / "labelstudio_tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [im["file_name"] for im in cvat["images"]]
    results = [r for t in tasks for r in t["predictions"][0]["result"]]
    assert len(results) == len(detections)
    assert all(r["from_name"] == "chars" and r["to_name"] == "image" and r["type"] == "rectanglelabels"
               and (r["original_width"], r["original_height"]) == (640, 360) for r in results)
    with open(out / "to_label_first.csv", newline="") as f:
        ranked = list(csv.DictReader(f))
    assert sorted(r["file"] for r in ranked) == sorted(expected)
    assert [r["status"] for r in ranked][-2:] == ["corrupt", "empty"]


@pytest.mark.slow
def test_reading_without_frames_is_refused_at_dry_run(tmp_path, run_snakemake, smoke_preset):
    done = run_snakemake(tmp_path, "-n", "results/read/reads.csv", "--configfile", str(smoke_preset))
    assert done.returncode != 0
    assert "read.images is not set" in done.stdout + done.stderr
    # and a folder that is not there is refused by the config check, before any job
    overlay = tmp_path / "read.yaml"
    overlay.write_text(yaml.safe_dump({"read": {"images": str(tmp_path / "nowhere")}}))
    done = run_snakemake(tmp_path, "-n", "--configfile", str(smoke_preset), str(overlay))
    assert done.returncode != 0
    assert "read.images" in done.stdout + done.stderr and "no such folder" in done.stdout + done.stderr
