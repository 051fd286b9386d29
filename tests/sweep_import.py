"""Sweep of corrupted exports through the workflow, as a new user meets them: where does each stop?

A Label Studio train export and a Roboflow test export (tests/support/exports.py, polygons, 16:9
frames) are corrupted one way per case; each case runs `snakemake -n` and then the import job
and the test sets (`results/data/testsets/testset1.json`) in a working directory of its own,
with the smoke preset. The table says where each case stopped (dry run / import job /
accepted-with-warning / accepted-silently) and whether the message names the user's file, the
record, the problem and the fix. No case may be accepted silently.

    python tests/sweep_import.py [--jobs 2] [--only NAME ...] [--keep DIR]

Not a pytest module (about 8 minutes on 2 busy cores); tests/test_import_workflow.py runs a few of
these cases through Snakemake in the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.exports import TEST_MIX, TRAIN_MIX, render_set, write_labelstudio, write_roboflow  # noqa: E402

FRAME = (256, 144)
N_TRAIN, N_TEST = 24, 10  # the smoke preset's experiments draw 24 real images


# ----------------------------------------------------------------------------- the exports


def make_base(folder: Path) -> None:
    """The uncorrupted exports: Label Studio (train) and Roboflow (test), with polygons."""
    write_labelstudio(render_set(N_TRAIN, seed=11, mix=TRAIN_MIX, size=FRAME, letters=True), folder / "ls")
    write_roboflow(render_set(N_TEST, seed=11, mix=TEST_MIX, start=1000, size=FRAME, letters=True), folder / "rf",
                   split="test")


class Case:
    """Paths of one case's exports and helpers to corrupt them."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.train = workdir / "exports/ls/result.json"
        self.test = workdir / "exports/rf/test/_annotations.coco.json"
        self.config: dict = {}

    def load(self, which: str) -> dict:
        return json.loads(getattr(self, which).read_text())

    def save(self, which: str, data: dict) -> None:
        getattr(self, which).write_text(json.dumps(data))

    def edit(self, which: str, fn: Callable[[dict], None]) -> None:
        data = self.load(which)
        fn(data)
        self.save(which, data)

    def image_file(self, which: str, k: int) -> Path:
        data = self.load(which)
        return getattr(self, which).parent / data["images"][k]["file_name"]

    def text(self, which: str, fn: Callable[[str], str]) -> None:
        path = getattr(self, which)
        path.write_text(fn(path.read_text()))


def _anns_of(data: dict, k: int) -> list[dict]:
    image_id = data["images"][k]["id"]
    return [a for a in data["annotations"] if a["image_id"] == image_id]


def _well(data: dict) -> int:
    return next(k for k, img in enumerate(data["images"]) if img.get("visibility") == "well")


def _shift_polygon(ann: dict, dx: float, dy: float) -> None:
    ann["segmentation"] = [[v + (dx if i % 2 == 0 else dy) for i, v in enumerate(p)] for p in ann["segmentation"]]


def _reencode(path: Path, out: Path, fn=lambda a: a, quality: int = 85) -> tuple[int, int]:
    pixels = fn(cv2.imread(str(path), cv2.IMREAD_COLOR))
    cv2.imwrite(str(out), pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return pixels.shape[1], pixels.shape[0]


def _leak(case: Case, fn=lambda a: a, quality: int | None = 85, crop: int = 0) -> None:
    """Test image 0 replaced by train image 3's picture, re-encoded (and transformed by fn), or
    its file copied byte for byte (quality None); the record and its annotations follow."""
    source = case.image_file("train", 3)
    target = case.image_file("test", 0)
    if quality is None:
        shutil.copyfile(source, target)
        w, h = case.load("train")["images"][3]["width"], case.load("train")["images"][3]["height"]
    else:
        w, h = _reencode(source, target, fn, quality)
    train = case.load("train")
    train_anns = _anns_of(train, 3)

    def edit(d):
        img = d["images"][0]
        img.update(width=w, height=h)
        scale = w / (train["images"][3]["width"] - 2 * crop)
        d["annotations"] = [a for a in d["annotations"] if a["image_id"] != img["id"]]
        next_id = max(a["id"] for a in d["annotations"]) + 1
        names = {c["name"]: c["id"] for c in d["categories"]}
        train_names = {c["id"]: c["name"] for c in train["categories"]}
        for k, a in enumerate(train_anns):
            x, y, bw, bh = a["bbox"]
            box = [(x - crop) * scale, (y - crop) * scale, bw * scale, bh * scale]
            if box[0] < 0 or box[1] < 0 or box[0] + box[2] > w or box[1] + box[3] > h:
                continue
            d["annotations"].append({"id": next_id + k, "image_id": img["id"],
                                     "category_id": names[train_names[a["category_id"]]], "bbox": box,
                                     "area": box[2] * box[3], "segmentation": [], "iscrowd": 0})
        img["billet_id"] = ""
    case.edit("test", edit)


def _flip_boxes(case: Case, convert) -> None:
    def edit(d):
        sizes = {img["id"]: (img["width"], img["height"]) for img in d["images"]}
        for a in d["annotations"]:
            a["bbox"] = convert(a["bbox"], *sizes[a["image_id"]])
            a["segmentation"] = []
    case.edit("train", edit)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _dup_all_annotations_of_test_image(d: dict) -> None:
    extra = [dict(a) for a in _anns_of(d, 1)]
    top = max(a["id"] for a in d["annotations"])
    for k, a in enumerate(extra, 1):
        a["id"] = top + k
    d["annotations"] += extra


def _swap_billet_character(d: dict) -> None:
    img = d["images"][_well(d)]
    names = {c["id"]: c["name"] for c in d["categories"]}
    present = {names[a["category_id"]] for a in _anns_of(d, _well(d))}
    first = img["billet_id"][0]
    other = next(c for c in "0123456789ABCDEFGHJKLMNPRSTUVWXYZ" if c not in present)
    img["billet_id"] = other + img["billet_id"][1:] if first != other else img["billet_id"]


def _symlink_image(case: Case) -> None:
    a, b = case.image_file("train", 4), case.image_file("train", 5)
    data = case.load("train")
    b.unlink()
    b.symlink_to(a.name)
    data["images"][5]["width"], data["images"][5]["height"] = data["images"][4]["width"], data["images"][4]["height"]
    case.save("train", data)


def _bowtie(d: dict) -> None:
    a = d["annotations"][3]
    x, y, w, h = a["bbox"]
    a["segmentation"] = [[x, y, x + w, y + h, x + w, y, x, y + h]]


def _category_rename(which_names: dict[str, str]):
    def edit(d):
        for c in d["categories"]:
            if c["name"] in which_names:
                c["name"] = which_names[c["name"]]
    return edit


def _used_letter(d: dict) -> str:
    names = {c["id"]: c["name"] for c in d["categories"]}
    return next(names[a["category_id"]] for a in d["annotations"] if names[a["category_id"]].isalpha())


def _case_and_fold(d: dict) -> None:
    """A used letter's category also appears in lower case, used by one annotation."""
    letter = _used_letter(d)
    new_id = max(c["id"] for c in d["categories"]) + 1
    d["categories"].append({"id": new_id, "name": letter.lower()})
    d["annotations"][0]["category_id"] = new_id


@dataclass
class Spec:
    name: str
    kind: str  # json | names | record | box | file | pools | config
    corrupt: Callable[[Case], None]
    record: bool = True  # whether the problem lies in one record (else the whole file or the config)


def _config(**changes):
    def apply(case: Case):
        case.config.update(changes)
    return apply


SPECS = [
    # --- JSON as users produce it
    Spec("key twice in one image object", "json", lambda c: c.text(
        "train", lambda t: t.replace('"width": 256,', '"width": 256, "width": 128,', 1))),
    Spec("info: null in the test export", "json", lambda c: c.edit("test", lambda d: d.update(info=None)), record=False),
    Spec("images: null", "json", lambda c: c.edit("train", lambda d: d.update(images=None)), record=False),
    Spec("licenses: null", "json", lambda c: c.edit("test", lambda d: d.update(licenses=None)), record=False),
    Spec("nesting 100000 deep (RecursionError)", "json", lambda c: c.text(
        "train", lambda t: t.rstrip()[:-1] + ', "extra": ' + _deep(100_000) + "}"), record=False),
    Spec("nesting 40 deep", "json", lambda c: c.text(
        "test", lambda t: t.rstrip()[:-1] + ', "extra": ' + _deep(40) + "}"), record=False),
    Spec("NaN in a bbox", "json", lambda c: c.text("train", lambda t: re.sub(r'"bbox": \[\s*[0-9.]+', '"bbox": [NaN', t, 1))),
    Spec("Infinity in a polygon", "json", lambda c: c.text(
        "test", lambda t: re.sub(r'"segmentation":\[\[[0-9.]+', '"segmentation":[[Infinity', t, 1))),
    Spec("string image id", "json", lambda c: c.edit("train", lambda d: d["images"][2].update(id=str(d["images"][2]["id"])))),
    Spec("boolean category_id", "json", lambda c: c.edit("test", lambda d: d["annotations"][0].update(category_id=True))),
    Spec("UTF-16 file", "json", lambda c: c.train.write_bytes(c.train.read_text().encode("utf-16")), record=False),
    Spec("truncated JSON", "json", lambda c: c.train.write_text(c.train.read_text()[:5000]), record=False),
    Spec("user key 'source' on images", "json", lambda c: c.edit("train", lambda d: d["images"][1].update(source="camera3"))),
    Spec("user key 'user_file_name' on test images", "json",
         lambda c: c.edit("test", lambda d: d["images"][0].update(user_file_name="x.png"))),
    # --- category names
    Spec("category name ' 5' with a space", "names", lambda c: c.edit("train", _category_rename({"5": " 5"})), record=False),
    Spec("letter category in lower case", "names",
         lambda c: c.edit("train", lambda d: _category_rename({_used_letter(d): _used_letter(d).lower()})(d)), record=False),
    Spec("full-width digit in the test export", "names", lambda c: c.edit("test", _category_rename({"7": "７"})),
         record=False),
    Spec("'A' and 'a' both used", "names", lambda c: c.edit("train", _case_and_fold)),
    Spec("test category unknown to training", "names", lambda c: c.edit(
        "test", lambda d: (d["categories"].append({"id": 99, "name": "#"}), d["annotations"][0].update(category_id=99))),
        record=False),
    # --- records against records
    Spec("duplicate image id", "record", lambda c: c.edit("train", lambda d: d["images"][3].update(id=d["images"][2]["id"]))),
    Spec("duplicate annotation id", "record", lambda c: c.edit(
        "test", lambda d: d["annotations"][4].update(id=d["annotations"][3]["id"]))),
    Spec("annotation of a missing image", "record", lambda c: c.edit("train", lambda d: d["annotations"][0].update(image_id=999))),
    Spec("each annotation of a test image twice", "record", lambda c: c.edit("test", _dup_all_annotations_of_test_image)),
    Spec("one character boxed twice with two labels", "record", lambda c: c.edit("train", lambda d: d["annotations"].append(
        {**d["annotations"][2], "id": 10_000, "category_id": next(
            x["id"] for x in d["categories"] if x["id"] != d["annotations"][2]["category_id"])}))),
    Spec("billet_id with one character changed", "record", lambda c: c.edit("train", _swap_billet_character)),
    Spec("billet_id with a character too many", "record", lambda c: c.edit(
        "test", lambda d: d["images"][_well(d)].update(billet_id=d["images"][_well(d)]["billet_id"] + "7"))),
    # --- boxes, outlines and images
    Spec("box outside the image", "box", lambda c: c.edit("train", lambda d: d["annotations"][1]["bbox"].__setitem__(0, 250.0))),
    Spec("box of zero width", "box", lambda c: c.edit("test", lambda d: d["annotations"][1]["bbox"].__setitem__(2, 0))),
    Spec("polygon contradicting its box", "box", lambda c: c.edit("train", lambda d: _shift_polygon(d["annotations"][5], 40, 30))),
    Spec("polygon below the picture, box inside", "box",
         lambda c: c.edit("test", lambda d: _shift_polygon(d["annotations"][2], 0, 160))),
    Spec("polygon of two points", "box", lambda c: c.edit("train", lambda d: d["annotations"][6].update(
        segmentation=[d["annotations"][6]["segmentation"][0][:4]]))),
    Spec("self-intersecting outline (bow tie)", "box", lambda c: c.edit("train", _bowtie)),
    Spec("boxes normalised to 0-1", "box", lambda c: _flip_boxes(c, lambda b, w, h: [b[0] / w, b[1] / h, b[2] / w, b[3] / h]),
         record=False),
    Spec("boxes as corners [x0, y0, x1, y1]", "box", lambda c: _flip_boxes(c, lambda b, w, h: [b[0], b[1], b[0] + b[2], b[1] + b[3]]),
         record=False),
    Spec("boxes as centres [cx, cy, w, h]", "box", lambda c: c.edit("train", lambda d: [a.update(
        bbox=[a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2, a["bbox"][2], a["bbox"][3]])
        for a in d["annotations"]])),
    Spec("width/height swapped in a record", "box", lambda c: c.edit("test", lambda d: d["images"][2].update(
        width=d["images"][2]["height"], height=d["images"][2]["width"]))),
    # --- files
    Spec("image file missing", "file", lambda c: c.image_file("train", 2).unlink()),
    Spec("two records name one file", "file", lambda c: c.edit("train", lambda d: d["images"][4].update(
        file_name=d["images"][3]["file_name"]))),
    Spec("a file symlinked to another record's file", "file", _symlink_image),
    Spec("truncated image file", "file", lambda c: c.image_file("test", 3).write_bytes(c.image_file("test", 3).read_bytes()[:900])),
    Spec("image replaced by one of another size", "file", lambda c: cv2.imwrite(
        str(c.image_file("train", 7)), np.full((100, 100, 3), 128, np.uint8))),
    Spec("file name climbing out of the folder", "file", lambda c: c.edit("train", lambda d: d["images"][0].update(
        file_name="../../../../etc/passwd"))),
    # --- the two pools
    Spec("test export without annotations", "pools", lambda c: c.edit("test", lambda d: d.update(annotations=[])), record=False),
    Spec("train export without annotations", "pools", lambda c: c.edit("train", lambda d: d.update(annotations=[])), record=False),
    Spec("train picture in test, byte-identical", "pools", lambda c: _leak(c, quality=None)),
    Spec("train picture in test, JPEG q85", "pools", lambda c: _leak(c, quality=85)),
    Spec("train picture in test, resized to 75 %", "pools", lambda c: _leak(
        c, lambda a: cv2.resize(a, (192, 108), interpolation=cv2.INTER_AREA))),
    Spec("train picture in test, cropped 6 px a side", "pools", lambda c: _leak(c, lambda a: a[6:-6, 6:-6], crop=6)),
    # --- the config against the data
    Spec("experiments.images larger than the pool", "config", _config(experiments={"images": 400}), record=False),
    Spec("test set on an attribute nobody has", "config", _config(
        test_sets=[{"name": "all"}, {"name": "rusty", "where": {"rust": True}}]), record=False),
    Spec("test set selecting nothing", "config", _config(
        test_sets=[{"name": "all"}, {"name": "site C", "where": {"site": "C"}}]), record=False),
    Spec("image folder that does not exist", "config", _config(train_images="/nonexistent/images"), record=False),
]


# ----------------------------------------------------------------------------- running a case


def write_config(case: Case) -> Path:
    changes = dict(case.config)
    coco = {"train": str(case.train), "train_images": str(case.train.parent), "test": str(case.test),
            "test_images": str(case.test.parent)}
    if "train_images" in changes:
        coco["train_images"] = changes.pop("train_images")
    # The frames carry up to 21 characters (3 rows of 7): room for them in the detector's slots.
    config = {"data": {"source": "coco", "coco": coco}, "evaluation": {"id_pattern": None},
              "detector": {"max_boxes": 24}}
    if "test_sets" in changes:
        config["data"]["test_sets"] = changes.pop("test_sets")
        config["evaluation"]["gallery"] = {"test_set": 1}
    config.update(changes)
    path = case.workdir / "own.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(case: Case, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(case.workdir), "--configfile", str(ROOT / "tests/presets/smoke.yaml"), str(case.workdir / "own.yaml"),
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def refusal_text(output: str) -> str:
    """The refusal the user reads: the config check's lines, or the import job's message block."""
    if "config refused" in output:
        return output[output.index("config refused"):].split("\n  File ")[0]
    if "Your data was refused" in output:
        return output[output.index("Your data was refused"):].split("(for a bug report")[0]
    lines = [line for line in output.splitlines() if "Error" in line or "error" in line]
    return "\n".join(lines[-5:])


def assess(text: str, case: Case, record: bool) -> dict[str, str]:
    """Does the message name the user's file, the record, the problem and the fix?"""
    names_file = str(case.workdir / "exports") in text or "data.coco." in text or "experiments." in text \
        or "data.test_sets" in text
    record_words = ("image id", "annotation id", "annotations id", "categories id", "category id", "images[",
                    "annotations[", "categories[", "billet_id", "key")
    names_record = any(w in text for w in record_words)
    problem = len(text.strip()) > 40
    fix = bool(re.search(r"\bfix\b", text, re.IGNORECASE))
    yes = lambda b: "yes" if b else "NO"
    return {"file": yes(names_file), "record": yes(names_record) if record else "-", "problem": yes(problem),
            "fix": yes(fix)}


def run_case(spec: Spec, base: Path, root: Path) -> dict:
    workdir = root / re.sub(r"[^a-z0-9]+", "_", spec.name.lower()).strip("_")
    shutil.copytree(base, workdir / "exports", symlinks=True)
    case = Case(workdir)
    spec.corrupt(case)
    write_config(case)
    dry = snakemake(case, "-n", "--quiet", "rules")
    row = {"case": spec.name, "kind": spec.kind}
    if dry.returncode != 0:
        text = refusal_text(dry.stdout + dry.stderr)
        return {**row, "stopped": "dry run", **assess(text, case, spec.record), "message": text}
    run = snakemake(case, "--cores", "1", "--retries", "0", "results/data/testsets/testset1.json")
    log = ""
    for name in ("real_pools", "test_sets"):
        path = workdir / f"logs/data/{name}.log"
        if path.is_file():
            log += path.read_text()
    if run.returncode != 0:
        text = refusal_text(run.stdout + run.stderr)
        traceback_above = "Traceback" in (run.stdout + run.stderr).split("Your data was refused")[0]
        out = {**row, "stopped": "import job", **assess(text, case, spec.record), "message": text}
        if traceback_above:
            out["stopped"] += " (traceback above!)"
        return out
    warnings = [line.split(" WARNING ", 1)[1] for line in log.splitlines() if " WARNING " in line]
    if warnings:
        text = "\n".join(warnings)
        return {**row, "stopped": "accepted-with-warning", **assess(text, case, spec.record), "message": text}
    return {**row, "stopped": "accepted-silently", "file": "-", "record": "-", "problem": "-", "fix": "-",
            "message": ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run side by side")
    parser.add_argument("--only", nargs="*", help="run only cases whose name contains one of these")
    parser.add_argument("--keep", type=Path, help="keep the cases' working directories here")
    parser.add_argument("--messages", action="store_true", help="print every case's message after the table")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="sweep_import_"))
    root.mkdir(parents=True, exist_ok=True)
    base = root / "_base"
    if not base.exists():
        make_base(base)
    specs = [s for s in SPECS if not args.only or any(o.lower() in s.name.lower() for o in args.only)]
    # The uncorrupted exports first: they must import without a word of warning.
    control = run_case(Spec("uncorrupted exports (control)", "-", lambda c: None, record=False), base, root)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda s: run_case(s, base, root), specs))
    header = f"{'#':>2}  {'case':<46} {'kind':<7} {'stopped at':<22} file record problem fix"
    print(header)
    print("-" * len(header))
    print(f"{0:>2}  {control['case']:<46} {control['kind']:<7} {control['stopped']:<22}")
    for n, r in enumerate(rows, 1):
        print(f"{n:>2}  {r['case']:<46} {r['kind']:<7} {r['stopped']:<22} {r['file']:<4} {r['record']:<6} "
              f"{r['problem']:<7} {r['fix']}")
    silent = [r["case"] for r in rows if r["stopped"] == "accepted-silently"]
    unnamed = [r["case"] for r in rows if "NO" in (r["file"], r["record"], r["problem"], r["fix"])]
    print(f"\n{len(rows)} corruptions: {sum(r['stopped'] == 'dry run' for r in rows)} stopped by the dry run, "
          f"{sum(r['stopped'].startswith('import job') for r in rows)} by the import job, "
          f"{sum(r['stopped'] == 'accepted-with-warning' for r in rows)} accepted with a warning, "
          f"{len(silent)} accepted silently; {len(unnamed)} messages lack a part")
    if control["stopped"] != "accepted-silently":
        print(f"the control case was not accepted cleanly: {control['stopped']}\n{control['message']}")
    if args.messages:
        for r in rows:
            print(f"\n--- {r['case']} ({r['stopped']})\n{r['message']}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if silent or unnamed or control["stopped"] != "accepted-silently" else 0


if __name__ == "__main__":
    sys.exit(main())
