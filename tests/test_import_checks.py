"""Cross-checks of a user's export (billetjax.data.checks and the importer's use of them), on
exports in the tools' formats (tests/support/exports.py): every redundant fact against the others,
repairs with their WARNING, JSON as users write it, one bit depth per data set, the content
fingerprint that reruns the import, and refusals as one message block."""

import io
import json
import logging
import os
from contextlib import redirect_stderr

import cv2
import numpy as np
import pytest

from billetjax import coco as cc
from billetjax.config import glyph_requirement
from billetjax.data import checks
from billetjax.data.fingerprint import content_fingerprint
from billetjax.data.importer import ImportOptions, data_set_bit_depth, decode_frame, import_user_pools
from billetjax.data.refusal import refusal_block, refusals_as_messages
from billetjax.data.userdata import user_data_problems
from billetjax.glyphs import builtin_glyphs
from support.exports import TEST_MIX, TRAIN_MIX, render_frame, render_set, write_labelstudio, write_roboflow

ALPHABET = builtin_glyphs().alphabet
FRAME = (192, 108)
SIZE = 96


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A Label Studio train export (polygons) and a Roboflow test export (polygons, JPEG)."""
    root = tmp_path_factory.mktemp("exports")
    train = write_labelstudio(render_set(6, seed=21, mix=TRAIN_MIX, size=FRAME, letters=True), root / "ls")
    test = write_roboflow(render_set(4, seed=21, mix=TEST_MIX, start=500, size=FRAME, letters=True), root / "rf",
                          split="test")
    # Only characters the train export has (a test character never trained on is refused), and
    # billet IDs without them: an annotator who skipped the others.
    studio = json.loads(train.read_text())
    known = {c["name"] for c in studio["categories"] if c["id"] in {a["category_id"] for a in studio["annotations"]}}
    data = json.loads(test.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    data["annotations"] = [a for a in data["annotations"] if names[a["category_id"]] in known]
    for img in data["images"]:
        img["billet_id"] = "".join(c for c in img["billet_id"] if c in known)
    test.write_text(json.dumps(data))
    return {"train": train, "test": test}


@pytest.fixture
def user(exports, tmp_path, make_config):
    """A fresh copy of the exports and a function importing them (config overrides allowed)."""
    import shutil

    train_dir = tmp_path / "ls"
    test_dir = tmp_path / "rf"
    shutil.copytree(exports["train"].parent, train_dir)
    shutil.copytree(exports["test"].parent.parent, test_dir)
    paths = {"train": train_dir / "result.json", "test": test_dir / "test/_annotations.coco.json"}

    def run(**top):
        config = make_config({"image_size_px": SIZE, "data": {"source": "coco", "coco": {
            "train": str(paths["train"]), "train_images": str(train_dir), "test": str(paths["test"]),
            "test_images": str(paths["test"].parent)}}, **top})
        out = tmp_path / "results"
        import_user_pools(config, out / "train_pool.json", out / "test_pool.json", out / "train", out / "test",
                          glyph_requirement(config))
        return cc.load(out / "train_pool.json"), cc.load(out / "test_pool.json")

    def edit(which, fn):
        data = json.loads(paths[which].read_text())
        fn(data)
        paths[which].write_text(json.dumps(data))

    return {**paths, "run": run, "edit": edit, "train_dir": train_dir}


# ----------------------------------------------------------------------------- the same picture


def _jpeg(rgb, quality):
    ok, buf = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def test_the_leak_threshold_separates_copies_from_other_frames():
    """Distinct frames of one renderer (alike: one layout, one surface model) score below the
    threshold; the same frame re-encoded, resized, brightened or cropped scores above it."""
    frames = [f.pixels(8) for f in render_set(10, seed=4, size=(320, 180))]
    thumbs = [checks.thumbnail(p, str(k)) for k, p in enumerate(frames)]
    distinct = [checks.same_picture_score(a, b) for i, a in enumerate(thumbs) for b in thumbs[i + 1:]]
    assert max(distinct) < checks.LEAK_NCC_THRESHOLD - 0.1
    copies = {
        "jpeg 85": lambda p: _jpeg(p, 85), "jpeg 50": lambda p: _jpeg(p, 50),
        "75 %": lambda p: cv2.resize(p, (240, 135), interpolation=cv2.INTER_AREA),
        "brighter": lambda p: np.clip(p.astype(int) + 25, 0, 255).astype(np.uint8),
        "crop 4 %": lambda p: p[7:-7, 13:-13], "crop 8 % of the left": lambda p: p[:, 26:],
        "crop 5 % resized back": lambda p: cv2.resize(p[9:-9, 16:-16], (320, 180)),
    }
    for name, change in copies.items():
        scores = [checks.same_picture_score(t, checks.thumbnail(change(p), "copy")) for t, p in zip(thumbs, frames)]
        assert min(scores) > checks.LEAK_NCC_THRESHOLD + 0.1, name
    leaks = checks.find_leaks(thumbs[:5], [checks.thumbnail(_jpeg(frames[3], 80), "t0"), thumbs[7]])
    assert [(a.where, b.where) for a, b, _ in leaks] == [("t0", "3")]


def test_a_train_picture_resized_into_the_test_export_is_refused(user):
    train = json.loads(user["train"].read_text())
    source = user["train"].parent / train["images"][2]["file_name"]
    test = json.loads(user["test"].read_text())
    target = user["test"].parent / test["images"][1]["file_name"]
    pixels = cv2.resize(cv2.imread(str(source)), (144, 81), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(target), pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])

    def shrink(d):
        d["images"][1].update(width=144, height=81, billet_id="")
        for a in d["annotations"]:
            if a["image_id"] == d["images"][1]["id"]:
                a["bbox"] = [v * 0.75 for v in a["bbox"]]
                a["segmentation"] = [[v * 0.75 for v in p] for p in a["segmentation"]]
    user["edit"]("test", shrink)
    with pytest.raises(cc.CocoError, match=r"1 test image\(s\) are also in the train pool .*test image id 1 .* is "
                                           r"train image id 2 .*fix: remove them"):
        user["run"]()


# ----------------------------------------------------------------------------- boxes and outlines


def test_box_and_outline_must_agree_and_the_convention_is_named():
    ring = [10, 20, 30, 20, 30, 50, 10, 50]
    ok = {"id": 1, "bbox": [10, 20, 20, 30], "segmentation": [ring]}
    checks.check_box_and_outline(ok, 100, 80, "f: image id 1")
    nudged = {**ok, "bbox": [11, 21, 19, 28]}  # a pixel of rounding on each side
    checks.check_box_and_outline(nudged, 100, 80, "f: image id 1")
    far = {**ok, "bbox": [60, 20, 7, 8]}
    with pytest.raises(cc.CocoError, match=r"f: image id 1: the box \[60.0, 20.0, 7.0, 8.0\] .* and the outline's bounds "
                                           r"\[10.0, 20.0, 20.0, 30.0\] disagree.*fix: redraw"):
        checks.check_box_and_outline(far, 100, 80, "f: image id 1")
    centre = {**ok, "bbox": [20, 35, 20, 30]}
    with pytest.raises(cc.CocoError, match=r"fits the outline if they are centre coordinates \[cx, cy, w, h\]: "
                                           r"export COCO boxes"):
        checks.check_box_and_outline(centre, 100, 80, "f")
    below = {**ok, "segmentation": [[10, 90, 30, 90, 30, 120]]}
    with pytest.raises(cc.CocoError, match=r"the outline spans x 10.0..30.0, y 90.0..120.0, outside the 100x80 image"):
        checks.check_box_and_outline(below, 100, 80, "f")
    with pytest.raises(cc.CocoError, match=r"bbox \[90.0, 20.0, 20.0, 30.0\] lies outside the image \(100x80\); fix"):
        checks.check_box_and_outline({"id": 2, "bbox": [90, 20, 20, 30]}, 100, 80, "f")


def test_box_conventions_are_recognised_from_their_statistics(exports):
    coco = json.loads(exports["train"].read_text())
    assert checks.box_convention(coco) is None
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}

    def converted(fn):
        return {**coco, "annotations": [{**a, "bbox": fn(a["bbox"], *sizes[a["image_id"]])} for a in coco["annotations"]]}

    assert checks.box_convention(converted(lambda b, w, h: [b[0] / w, b[1] / h, b[2] / w, b[3] / h])) == "normalised"
    assert checks.box_convention(converted(lambda b, w, h: [b[0], b[1], b[0] + b[2], b[1] + b[3]])) == "corners"
    big = {**coco, "images": [{**img, "width": 1920, "height": 1080} for img in coco["images"]]}
    sizes = {img["id"]: (1920, 1080) for img in big["images"]}
    percent = {**big, "annotations": [{**a, "bbox": [v / 19.2 for v in a["bbox"]]} for a in big["annotations"]]}
    assert checks.box_convention(percent) == "percent"


def test_boxes_in_another_convention_are_refused_by_name(user):
    def to_corners(d):
        for a in d["annotations"]:
            x, y, w, h = a["bbox"]
            a["bbox"], a["segmentation"] = [x, y, x + w, y + h], []
    user["edit"]("train", to_corners)
    with pytest.raises(cc.CocoError, match=r"result.json: the boxes are not COCO's .*corner coordinates "
                                           r"\[x0, y0, x1, y1\].*fix: export COCO boxes"):
        user["run"]()


# ----------------------------------------------------------------------------- records against records


def test_exact_duplicates_are_dropped_with_a_count_and_overlaps_refused(user, caplog):
    def twice(d):
        first = d["images"][0]["id"]
        extra = [dict(a) for a in d["annotations"] if a["image_id"] == first]
        for k, a in enumerate(extra, 1):
            a["id"] = 10_000 + k
        d["annotations"] += extra
    user["edit"]("test", twice)
    original = json.loads(user["test"].read_text())
    n_first = sum(a["image_id"] == original["images"][0]["id"] for a in original["annotations"]) // 2
    with caplog.at_level(logging.WARNING):
        _, test = user["run"]()
    first_pool_id = test["images"][0]["id"]
    assert sum(a["image_id"] == first_pool_id for a in test["annotations"]) == n_first
    assert f"exact duplicate annotations dropped (same character, box and outline): {n_first} times" in caplog.text

    def relabel(d):
        a = dict(d["annotations"][0])
        a["id"] = 20_000
        a["category_id"] = next(c["id"] for c in d["categories"] if c["id"] != a["category_id"] and c["id"] > 0)
        d["annotations"].append(a)
    user["edit"]("test", relabel)
    with pytest.raises(cc.CocoError, match=r"annotations id \d+ .* and id 20000 .* overlap with IoU 1.00: one stamped "
                                           r"character drawn twice; fix: delete the wrong one"):
        user["run"]()


def test_billet_id_against_the_annotated_characters():
    names = {1: "4", 2: "7", 3: "A"}
    anns = [{"category_id": 1}, {"category_id": 2}, {"category_id": 3}]
    hidden = []
    checks.check_billet_id({"billet_id": "A 74"}, anns, names, ALPHABET, "f", hidden)  # layout spaces
    checks.check_billet_id({"billet_id": "a74"}, anns, names, ALPHABET, "f", hidden)  # case the glyphs lack
    with pytest.raises(cc.CocoError, match=r"billet_id '4A1' and the image's 3 annotated characters \(47A\) disagree: "
                                           r"annotated \['7'\] not in the ID; ID characters \['1'\] not annotated; fix"):
        checks.check_billet_id({"billet_id": "4A1"}, anns, names, ALPHABET, "f", hidden)
    with pytest.raises(cc.CocoError, match=r"ID characters \['9'\] not annotated"):
        checks.check_billet_id({"billet_id": "47A9", "visibility": "well"}, anns, names, ALPHABET, "f", hidden)
    checks.check_billet_id({"billet_id": "47A9", "visibility": "partial"}, anns, names, ALPHABET, "f:1", hidden)
    assert hidden == ["f:1"]


def test_a_file_reached_twice_through_a_symlink_is_refused(user):
    train = json.loads(user["train"].read_text())
    a, b = (user["train"].parent / train["images"][k]["file_name"] for k in (1, 2))
    b.unlink()
    os.symlink(a.name, b)
    with pytest.raises(cc.CocoError, match=r"image id 1 \(.*\) and image id 2 \(.*\) are the same file .*fix: merge"):
        user["run"]()


# ----------------------------------------------------------------------------- JSON and names


def test_json_as_users_write_it(tmp_path):
    (tmp_path / "dup.json").write_text('{"images": [{"id": 3, "file_name": "a.png", "id": 4}]}')
    with pytest.raises(cc.CocoError, match=r"dup.json: image id 3 \(a.png\): the key 'id' appears twice \(3 and 4\)"):
        cc.read_json(tmp_path / "dup.json")
    (tmp_path / "nan.json").write_text('{"annotations": [{"id": 7, "bbox": [1, 2, NaN, 3]}, {"id": 8, "area": NaN}]}')
    with pytest.raises(cc.CocoError, match=r"nan.json: annotation id 7, 'bbox'\[2\]: NaN is not a JSON number "
                                           r"\(2 such values in the file\); fix"):
        cc.read_json(tmp_path / "nan.json")
    (tmp_path / "deep.json").write_text('{"x": ' + "[" * 50 + "]" * 50 + "}")
    with pytest.raises(cc.CocoError, match=r"deep.json: lists or objects nest more than 32 deep"):
        cc.read_json(tmp_path / "deep.json")
    (tmp_path / "deeper.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(cc.CocoError, match=r"deeper.json: lists or objects nest deeper than Python's JSON reader"):
        cc.read_json(tmp_path / "deeper.json")


def test_nulls_and_our_keys_in_a_users_export(user, caplog):
    user["edit"]("test", lambda d: d.update(info=None, licenses=None))
    with caplog.at_level(logging.WARNING):
        user["run"]()
    assert "'info' is null; taken as empty" in caplog.text
    user["edit"]("test", lambda d: d["images"][2].update(source="line 2"))
    with pytest.raises(cc.CocoError, match=r"_annotations.coco.json: image id 2 .*the key \['source'\] is the pools' own"
                                           r".*fix: rename it"):
        user["run"]()


def test_category_names_are_compared_normalised_and_reported(user, caplog):
    def rename(d):
        for c in d["categories"]:
            c["name"] = {"5": " 5 ", "7": "７"}.get(c["name"], c["name"].lower() if c["name"].isalpha() else c["name"])
    user["edit"]("test", rename)
    with caplog.at_level(logging.WARNING):
        train, test = user["run"](experiments={"sets": [{"synthetic_pct": 0}]})  # also without synthesis
    assert [c["name"] for c in test["categories"]] == [c["name"] for c in train["categories"]]
    assert "name ' 5 ' read as '5'" in caplog.text or "name '７' read as '7'" in caplog.text
    assert checks.normalise_name("a", ALPHABET) == "A" and checks.normalise_name("a", ALPHABET + "a") == "a"

    def clash(d):
        used = {a["category_id"] for a in d["annotations"]}
        letter = next(c for c in d["categories"] if c["id"] in used and c["name"].isalpha())
        d["categories"].append({"id": 999, "name": letter["name"].lower()})
        d["annotations"][0]["category_id"] = 999
    user["edit"]("train", clash)
    with pytest.raises(cc.CocoError, match=r"are the same character '[A-Z]' after normalising.*fix: merge"):
        user["run"]()


def test_an_export_without_annotations_is_refused(user):
    user["edit"]("test", lambda d: d.update(annotations=[]))
    with pytest.raises(cc.CocoError, match=r"_annotations.coco.json: no annotations \(4 images, 0 characters\); the "
                                           r"test sets need ground truth"):
        user["run"]()


# ----------------------------------------------------------------------------- 16-bit frames


def test_sixteen_bit_frames_share_one_bit_depth(tmp_path):
    """A dark frame of a 12-bit camera (values to 300) beside a bright one (to 4000): both are
    12-bit data, so the dark one stays dark (a depth per frame would have stretched it 4x, as 10 bits)."""
    frame = render_frame(seed=2, size=(160, 90))
    bright = frame.pixels("12-in-16")
    dark = (bright.astype(np.float64) * 300 / bright.max()).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "bright.png"), bright)
    cv2.imwrite(str(tmp_path / "dark.png"), dark)
    opts = ImportOptions(SIZE, "pad", "displayed", None, 10**6)
    bits = data_set_bit_depth([tmp_path / "bright.png", tmp_path / "dark.png"], opts)
    assert bits == 12
    decoded = decode_frame(tmp_path / "dark.png", opts, bits)
    assert decoded.pixels.max() == 300 >> 4
    assert decode_frame(tmp_path / "dark.png", opts).pixels.max() == 300 >> 2  # alone: taken as 10 bits
    assert data_set_bit_depth([tmp_path / "dark.png"], ImportOptions(SIZE, "pad", "displayed", 16, 10**6)) == 16


# ----------------------------------------------------------------------------- rerun and refusals


def test_the_fingerprint_follows_content_not_time_stamps(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(3):
        (folder / f"{k}.png").write_bytes(bytes([k]) * 1000)
    cache = tmp_path / "cache.json"
    first = content_fingerprint([folder, None], cache)
    reads = []
    from billetjax.data import fingerprint

    real = fingerprint._digest
    monkeypatch.setattr(fingerprint, "_digest", lambda p: reads.append(p.name) or real(p))
    assert content_fingerprint([folder, None], cache) == first and reads == []  # stat only
    stat = (folder / "1.png").stat()
    os.utime(folder / "1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    assert content_fingerprint([folder], cache) == first and reads == ["1.png"]
    (folder / "1.png").write_bytes(b"\x02" * 1000)  # new content, old time stamp
    os.utime(folder / "1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert content_fingerprint([folder], cache) != first
    assert content_fingerprint([tmp_path / "missing"], cache) != content_fingerprint([folder], cache)


def test_a_refusal_is_one_block_with_the_traceback_below(tmp_path):
    err = cc.CocoError("/x/result.json: image id 3 (a.png), annotation id 7: the box is wrong; fix: redraw it")
    block = refusal_block(err)
    assert "  /x/result.json: image id 3 (a.png), annotation id 7: the box is wrong\n\n  Fix: redraw it\n" in block
    stream = io.StringIO()
    with redirect_stderr(stream), pytest.raises(SystemExit) as stop:
        with refusals_as_messages():
            raise err
    assert stop.value.code == 1
    text = stream.getvalue()
    assert text.index("Your data was refused") < text.index("File ") and "Traceback" not in text.split("Fix:")[0]


def test_the_dry_run_refuses_what_would_fail_later(user, make_config):
    config = make_config({"data": {"source": "coco", "coco": {"train": str(user["train"]), "test": str(user["test"])}},
                          "experiments": {"images": 400}})
    problems = user_data_problems(config)
    assert len(problems) == 1 and "has 6 images, but experiment 1 draws 400 real images" in problems[0]
    assert "fix: lower experiments.images" in problems[0]
    sets = [{"name": "all"}, {"name": "line 3", "where": {"site": "C"}}]
    config = make_config({"data": {"source": "coco", "test_sets": sets,
                                   "coco": {"train": str(user["train"]), "test": str(user["test"])}},
                          "experiments": {"images": 4}, "evaluation": {"gallery": {"test_set": 1}}})
    problems = user_data_problems(config)
    assert len(problems) == 1 and "data.test_sets[1] ('line 3', testset2) selects no test image" in problems[0]
