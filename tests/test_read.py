"""Reading new frames (billetjax.read): boxes back in the displayed frame, the exported reader
against the in-process detector, a reader that needs no training stack, bad files, the outputs'
formats against fixtures written from the tools' documentation, and the frames to label first.

The detector is small and untrained (random weights give boxes everywhere): what is under test is
the geometry and the plumbing, which must hold whatever the detector finds.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from billetjax import coco as cc
from support.exports import corrupt, encode, render_frame

ROOT = Path(__file__).resolve().parents[1]
SIZE_PX = 128
TINY_MODEL = {"stem_width": 8, "widths": [8, 16, 32], "blocks": [1, 1, 1], "fpn_width": 16, "head_width": 32}
DIGITS = [{"id": i + 1, "name": str(i)} for i in range(10)]
FRAME = (640, 360)  # a camera frame of a foreign size and aspect


def write_detector(folder: Path, make_config, fit: str, max_pixels: int = 64_000_000, id_pattern=None):
    """A random-weights 128 px detector over the digits and its exported reader; (params, reader dir, config)."""
    from flax import nnx

    from billetjax.detector.models import FasterRCNN
    from billetjax.detector.spec import DetectorConfig, make_spec, save_params
    from billetjax.read.export import export_reader

    config = make_config({"image_size_px": SIZE_PX, "detector": {"model": TINY_MODEL, "inference": {"batch_size": 2}},
                          "data": {"coco": {"fit": fit, "max_pixels": max_pixels}},
                          # every detection counts, so that the pre-labels carry boxes
                          "evaluation": {"score_threshold": 0.0, "id_pattern": id_pattern}})
    boxes = np.array([[4, 4, 10, 16], [30, 20, 12, 18]], float)
    spec, _ = make_spec(DetectorConfig.from_config(config["detector"]), SIZE_PX, tuple(range(1, 11)), boxes)
    model = FasterRCNN(spec.model, nnx.Rngs(3))
    params = folder / "params.msgpack"
    save_params(params, spec, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    train = folder / "train.json"
    cc.save(train, cc.empty_dataset(DIGITS))
    export_reader(params, train, folder / "reader", config, experiment=1, seed=0)
    return params, folder / "reader", config


@pytest.fixture(scope="module")
def pad_detector(tmp_path_factory, make_config):
    return write_detector(tmp_path_factory.mktemp("pad"), make_config, "pad", max_pixels=1_000_000)


@pytest.fixture(scope="module")
def crop_detector(tmp_path_factory, make_config):
    return write_detector(tmp_path_factory.mktemp("crop"), make_config, "crop")


def write_png_with_exif(path: Path, upright: np.ndarray, orientation: int) -> None:
    """A lossless frame stored turned, tagged so that an EXIF-aware viewer shows `upright`."""
    store = {1: lambda a: a, 6: lambda a: np.rot90(a, 1), 8: lambda a: np.rot90(a, -1), 3: lambda a: np.rot90(a, 2)}
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(store[orientation](upright))).save(path, exif=exif.tobytes())


def reference_square(path: Path, fit: str) -> tuple[np.ndarray, float, float, float]:
    """The detector's input computed by hand: Pillow turns the frame upright (exif_transpose),
    OpenCV resizes it; 640 x 360 to 128 px: pad scales by 128/640 and centres 72 rows at
    y = 28 on the border colour; crop scales by 128/360 and keeps columns 50..177 of 228."""
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert upright.shape[:2] == (FRAME[1], FRAME[0])
    if fit == "pad":
        scale, (nw, nh), (dx, dy) = SIZE_PX / 640, (128, 72), (0, 28)
    else:
        scale, (nw, nh), (dx, dy) = SIZE_PX / 360, (228, 128), (-50, 0)
    resized = cv2.resize(upright, (nw, nh), interpolation=cv2.INTER_AREA)
    if fit == "pad":
        square = np.empty((SIZE_PX, SIZE_PX, 3), np.uint8)
        square[:] = resized[0, 0]  # the frames below have a uniform border
        square[dy:dy + nh] = resized
    else:
        square = resized[:, 50:178]
    return square, scale, float(dx), float(dy)


@pytest.mark.parametrize("fit,orientation", [("pad", 6), ("crop", 8), ("pad", 1)])
def test_boxes_come_back_in_the_displayed_frame(tmp_path, request, fit, orientation):
    """Frames of 640 x 360 holding a rendered billet with known characters, stored turned with
    an EXIF orientation: the square the detector sees is the hand-made one, and every box comes
    back as the hand-made inverse map of the detections on that square, within one pixel."""
    from billetjax.detector.predict import load_detector, make_predict_fn
    from billetjax.read import detect_frames, load_reader

    params, reader_path, _ = request.getfixturevalue(f"{fit}_detector")
    frames = tmp_path / "frames"
    frames.mkdir()
    billets = [render_frame(7, i, size=FRAME) for i in range(3)]
    for i, billet in enumerate(billets):
        upright = billet.pixels()[..., ::-1].copy()  # BGR -> RGB
        upright[:5], upright[-5:], upright[:, :5], upright[:, -5:] = 90, 90, 90, 90  # a uniform border
        write_png_with_exif(frames / f"frame{i}.png", upright, orientation)

    reader = load_reader(reader_path)
    root, readings = detect_frames(reader, frames, keep_squares=True)
    assert [r.frame.name for r in readings] == [f"frame{i}.png" for i in range(3)]
    spec, graphdef, weights = load_detector(params)
    predict = make_predict_fn(spec, graphdef)
    for r, billet in zip(readings, billets):
        assert r.frame.status == "read", r.frame.message
        fm = r.frame.frame_map
        assert (fm.width, fm.height, fm.orientation) == (*FRAME, orientation)
        square, scale, dx, dy = reference_square(r.frame.file, fit)
        np.testing.assert_array_equal(r.frame.square, square)
        # The known characters: each one's box, mapped onto the square by hand and back by the
        # reader's map, is itself (to rounding), and lies on the square.
        char_boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (c.bbox for c in billet.chars)])
        on_square = char_boxes * scale + [dx, dy, dx, dy]
        assert ((on_square >= 0) & (on_square <= SIZE_PX)).all()
        np.testing.assert_allclose(fm.to_original(on_square), char_boxes, atol=1e-6)
        # In-process detections on the hand-made square, mapped back by hand.
        dets = {k: np.asarray(v)[0] for k, v in predict(weights, square[None].repeat(2, 0)).items()}
        valid = np.flatnonzero(dets["valid"])
        assert len(valid) > 0
        expected = (dets["boxes"][valid] - [dx, dy, dx, dy]) / scale
        expected = np.clip(expected, 0, [FRAME[0], FRAME[1], FRAME[0], FRAME[1]])
        # a box wholly in the padding has nothing of the frame in it: not a detection in the frame
        inside = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
        assert inside.sum() > 0
        assert r.boxes.shape == expected[inside].shape
        np.testing.assert_allclose(r.boxes, expected[inside], atol=1.0)
        np.testing.assert_allclose(r.scores, dets["scores"][valid][inside], atol=1e-4)


def test_exported_reader_gives_the_in_process_detections(pad_detector):
    """The StableHLO reader and the jitted Flax detector on the same test pool: the same
    detections to float tolerance."""
    from billetjax.detector.predict import load_detector, make_predict_fn, predict_images
    from billetjax.read import load_reader

    params, reader_path, _ = pad_detector
    rng = np.random.default_rng(0)
    pool = np.stack([cv2.resize(render_frame(3, i, size=(256, 256)).pixels(), (SIZE_PX, SIZE_PX))[..., ::-1]
                     for i in range(3)] + [rng.integers(0, 255, (SIZE_PX, SIZE_PX, 3), dtype=np.uint8)])
    spec, graphdef, weights = load_detector(params)
    ours = predict_images(make_predict_fn(spec, graphdef), weights, pool, 2)
    exported = load_reader(reader_path).detect(pool)
    assert set(exported) == set(ours)
    np.testing.assert_array_equal(exported["valid"], ours["valid"])
    np.testing.assert_array_equal(exported["labels"], ours["labels"])
    assert ours["valid"].sum() > 0
    for key in ("boxes", "scores", "class_scores"):
        np.testing.assert_allclose(exported[key], ours[key], rtol=1e-4, atol=1e-3)


def test_reader_runs_without_the_training_stack(tmp_path, pad_detector):
    """Loading a reader and reading frames imports neither Flax, optax nor orbax."""
    _, reader_path, _ = pad_detector
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "a.jpg").write_bytes(encode(render_frame(1, 0), jpeg=True)[0])
    code = (f"import sys; from billetjax.read import load_reader, read_frames; "
            f"read_frames(load_reader({str(reader_path)!r}), {str(frames)!r}, {str(tmp_path / 'out')!r}); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('flax', 'optax', 'orbax')); "
            "print('TRAINING-STACK', bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TRAINING-STACK []" in done.stdout
    assert (tmp_path / "out" / "reads.csv").is_file()


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_bad_frames_each_get_a_status_and_nothing_is_lost(tmp_path, pad_detector):
    from billetjax.read import load_reader, read_frames

    _, reader_path, _ = pad_detector
    frames = tmp_path / "frames"
    (frames / "sub").mkdir(parents=True)
    for name in ("good.jpg", "truncated.jpg", "header.jpg", "sub/good2.jpg"):
        (frames / name).write_bytes(encode(render_frame(2, len(name)), jpeg=True)[0])
    corrupt(frames / "truncated.jpg", "truncate", keep=0.4)
    corrupt(frames / "header.jpg", "header")
    (frames / "empty.png").write_bytes(b"")
    cv2.imwrite(str(frames / "huge.png"), np.zeros((1100, 1000, 3), np.uint8))  # 1.1 MP > max_pixels (1 MP)
    (frames / "notes.txt").write_text("not a frame")
    paths = read_frames(load_reader(reader_path), frames, tmp_path / "out")
    rows = {r["file"]: r for r in read_csv(paths["reads"])}
    assert sorted(rows) == sorted(["empty.png", "good.jpg", "header.jpg", "huge.png", "notes.txt", "sub/good2.jpg",
                                   "truncated.jpg"])
    status = {name: row["status"] for name, row in rows.items()}
    assert status == {"empty.png": "empty", "good.jpg": "read", "header.jpg": "corrupt", "huge.png": "too_large",
                      "notes.txt": "corrupt", "sub/good2.jpg": "read", "truncated.jpg": "corrupt"}
    assert "0 bytes" in rows["empty.png"]["message"] and "max_pixels" in rows["huge.png"]["message"]
    assert "truncated" in rows["truncated.jpg"]["message"]
    for name in ("empty.png", "huge.png", "header.jpg"):
        assert rows[name]["billet_id"] == "" and rows[name]["n_characters"] == ""
    ranked = [r["file"] for r in read_csv(paths["to_label_first"])]
    assert sorted(ranked) == sorted(rows) and set(ranked[-5:]) == {n for n, s in status.items() if s != "read"}


def test_a_folder_without_files_is_refused(tmp_path, pad_detector):
    from billetjax.read import load_reader, read_frames
    from billetjax.read.frames import ReadError

    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / ".hidden").write_text("")
    with pytest.raises(ReadError, match=r"frames: no image files in this folder \(read.images\)"):
        read_frames(load_reader(pad_detector[1]), tmp_path / "frames", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# A task as Label Studio's guide "Import pre-annotated data" shows it (Basic Label Studio JSON
# format, `predictions` of an image task with RectangleLabels, values in percent of the
# original size), for a labelling config <Image name="image" value="$image"/> and
# <RectangleLabels name="label" toName="image">. (label-studio-sdk, which could parse it, pulls
# about 70 packages and 110 MB, nltk and a code generator among them: too heavy for the test extra.)
LABEL_STUDIO_TASK = json.loads("""
{"data": {"image": "/data/upload/1/frame.jpg"},
 "predictions": [{"model_version": "one", "score": 0.5,
   "result": [{"id": "result1", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
               "original_width": 600, "original_height": 403, "image_rotation": 0,
               "value": {"rotation": 0, "x": 4.98, "y": 12.82, "width": 32.52, "height": 44.91,
                         "rectanglelabels": ["Airplane"]}, "score": 0.87}]}]}
""")


def _shape(value):
    """The structure of a JSON value: keys and types, not values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def test_outputs_in_the_tools_formats(tmp_path, pad_detector):
    """reads.csv, detections.json (pycocotools loads it against the CVAT file), Label Studio tasks
    shaped as the guide's example with percentages of the original size, and a COCO 1.0 file
    shaped as CVAT writes one (tests/support's CVAT export)."""
    from pycocotools.coco import COCO

    from billetjax.read import ReadOptions, load_reader, read_frames
    from support.exports import write_cvat

    _, reader_path, _ = pad_detector
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        (frames / f"f{i}.jpg").write_bytes(encode(render_frame(4, i), jpeg=True, exif_orientation=6 if i else None)[0])
    (frames / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    options = ReadOptions(from_name="digits", to_name="photo", data_key="img", image_root="/data/local-files/?d=b/")
    paths = read_frames(load_reader(reader_path), frames, tmp_path / "out", options)
    assert sorted(p.name for p in paths.values()) == sorted(
        ["reads.csv", "detections.json", "labelstudio_tasks.json", "cvat_coco.json", "to_label_first.csv",
         "least_certain.png"])
    rows = read_csv(paths["reads"])
    assert list(rows[0])[:7] == ["file", "status", "billet_id", "id_valid", "n_characters", "min_score", "mean_score"]
    assert [r["file"] for r in rows] == ["broken.jpg", "f0.jpg", "f1.jpg", "f2.jpg"]
    assert [r["status"] for r in rows] == ["corrupt", "read", "read", "read"]
    assert [(r["width"], r["height"]) for r in rows[1:]] == [("640", "360")] * 3  # displayed, not stored

    # CVAT's COCO 1.0: the same keys as CVAT writes, images by file name, pycocotools reads it
    cvat = json.loads(paths["cvat"].read_text())
    example = json.loads(write_cvat([render_frame(0, 0)], tmp_path / "cvat", box_only=True, image_attrs="none").read_text())
    assert set(cvat) == set(example)
    assert set(cvat["images"][0]) == set(example["images"][0])
    assert set(cvat["annotations"][0]) >= set(example["annotations"][0])
    assert set(cvat["annotations"][0]["attributes"]) >= set(example["annotations"][0]["attributes"])
    assert [c["name"] for c in cvat["categories"]] == [str(d) for d in range(10)]
    assert [im["file_name"] for im in cvat["images"]] == ["f0.jpg", "f1.jpg", "f2.jpg"]
    gt = COCO(str(paths["cvat"]))
    detections = json.loads(paths["detections"].read_text())
    assert len(detections) > 0 and all(d["image_id"] in gt.imgs for d in detections)
    gt.loadRes(detections)
    # the reading threshold is 0: the pre-labels are the detections
    assert len(cvat["annotations"]) == len(detections)

    # Label Studio: the guide's task shape, percentages of the original (displayed) size
    tasks = json.loads(paths["labelstudio"].read_text())
    assert len(tasks) == 3
    assert [t["data"]["img"] for t in tasks] == [f"/data/local-files/?d=b/f{i}.jpg" for i in range(3)]
    guide = _shape(LABEL_STUDIO_TASK["predictions"][0]["result"][0])
    by_image = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append(d)
    for k, task in enumerate(tasks):
        assert set(_shape(task["predictions"][0])) >= set(_shape(LABEL_STUDIO_TASK["predictions"][0]))
        results = task["predictions"][0]["result"]
        assert len(results) == len(by_image[k + 2])  # image ids count the broken file too
        for result, det in zip(results, by_image[k + 2]):
            assert _shape(result) == guide
            assert (result["from_name"], result["to_name"]) == ("digits", "photo")
            assert (result["original_width"], result["original_height"]) == (640, 360)
            x, y, w, h = det["bbox"]
            v = result["value"]
            np.testing.assert_allclose([v["x"], v["y"], v["width"], v["height"]],
                                       [100 * x / 640, 100 * y / 360, 100 * w / 640, 100 * h / 360], atol=2e-3)
            assert v["rectanglelabels"] == [str(det["category_id"] - 1)]
            assert 0 <= v["x"] and v["x"] + v["width"] <= 100 + 1e-6 and v["y"] + v["height"] <= 100 + 1e-6


def test_frames_needing_a_human_come_first():
    """Readings that fail the ID pattern, are rejected or found nothing come first, then the
    least certain weakest character; unreadable files last."""
    from billetjax.read.frames import FrameMap, PreparedFrame
    from billetjax.read.outputs import need_ranking
    from billetjax.read.pipeline import FrameReading

    fm = FrameMap(640, 360, 0.2, 0.0, 28.0, 1)

    def reading(name, min_score, valid, rejected=False, n=11):
        r = FrameReading(PreparedFrame(Path(name), name, "read", frame_map=fm))
        r.reading = {"billet_id": "x", "id_valid": valid, "n_characters": n, "min_score": min_score,
                     "mean_score": min_score, "decoder": "pattern", "confidence": 0.9, "rejected": rejected}
        return r

    readings = [reading("sure.jpg", 0.95, True), reading("weak.jpg", 0.55, True),
                FrameReading(PreparedFrame(Path("gone.jpg"), "gone.jpg", "corrupt", "bad")),
                reading("invalid.jpg", 0.9, False), reading("nothing.jpg", None, False, True, 0),
                reading("rejected.jpg", 0.97, True, rejected=True)]
    ranked = need_ranking(readings)
    assert [r["file"] for r in ranked] == ["nothing.jpg", "invalid.jpg", "rejected.jpg", "weak.jpg", "sure.jpg",
                                           "gone.jpg"]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4, 5, 6]
    assert "fails the ID pattern" in ranked[1]["reason"] and ranked[-1]["reason"] == "not read: corrupt"


def test_command_line_reads_with_a_reader_and_refuses_a_missing_detector(tmp_path, pad_detector):
    _, reader_path, _ = pad_detector
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "a.jpg").write_bytes(encode(render_frame(5, 0), jpeg=True)[0])
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "billetjax.read", "--reader", str(reader_path), "--out",
                           str(tmp_path / "out"), "--no-gallery", str(frames / "a.jpg")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["file"] for r in read_csv(tmp_path / "out" / "reads.csv")] == ["a.jpg"]
    missing = subprocess.run([sys.executable, "-m", "billetjax.read", "--experiment", "2", "--seed", "0", "--out",
                              str(tmp_path / "out2"), str(frames)], capture_output=True, text=True, timeout=600,
                             env=env, cwd=tmp_path)
    assert missing.returncode != 0
    assert "no trained detector of experiment 2, seed 0" in missing.stderr
    assert "snakemake results/detector/exp2/seed0/reader/reader.json" in missing.stderr


def test_sixteen_bit_frames_are_read_at_the_folders_bit_depth(tmp_path, pad_detector):
    """Frames of a 12-bit camera in 16-bit PNGs: the folder's values fit 12 bits, so every frame
    is shifted by 4 (a dark frame stays dark), as the import does for a data set."""
    from billetjax.read import detect_frames, load_reader

    frames = tmp_path / "frames"
    frames.mkdir()
    grey = [render_frame(6, i, size=FRAME).pixels("12-in-16") for i in range(2)]
    grey[1] = grey[1] // 4  # a dark frame: its own largest value would fit 10 bits
    for i, g in enumerate(grey):
        cv2.imwrite(str(frames / f"g{i}.png"), g)
    _, readings = detect_frames(load_reader(pad_detector[1]), frames, keep_squares=True)
    for r, g in zip(readings, grey):
        assert r.frame.status == "read", r.frame.message
        eight = cv2.cvtColor((g >> 4).astype(np.uint8), cv2.COLOR_GRAY2RGB)
        resized = cv2.resize(eight, (128, 72), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(r.frame.square[28:100], resized)


def test_read_options_defaults_are_the_schemas(make_config):
    """`ReadOptions()` (reading from Python without a config, e.g. with a travelled reader) holds
    the schema's defaults of the `read` section, so the two cannot drift apart."""
    from billetjax.read import ReadOptions

    assert ReadOptions() == ReadOptions.from_config(make_config()["read"])
