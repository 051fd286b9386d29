"""Fixtures shared by the test modules.

pytest puts `tests/` on `sys.path` for this file, so the test-support package `tests/support`
(renderers of annotation tools' exports) is importable as `support`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def make_config():
    """A function: config.yaml merged with overrides, validated with the schema's defaults filled
    in (as the workflow does; `billetjax.config.load_config` without the cross-key check), e.g.
    `make_config({"data": {"source": "coco"}})`."""
    from billetjax.config import load_config

    def build(overrides: dict | None = None, base: str | Path | None = ROOT / "config.yaml") -> dict:
        return load_config(overrides or {}, base=base, check=False)

    return build


@pytest.fixture
def edit_module(tmp_path):
    """A function: `edit_module(monkeypatch, "billetjax.x")` points the module's `__file__` at a
    copy of its source with one more comment line, so that to whoever reads the module's source it
    has been edited (until `monkeypatch` undoes it)."""
    import importlib

    def edit(monkeypatch, module_name: str) -> None:
        module = importlib.import_module(module_name)
        copy = tmp_path / f"{module_name}.py"
        copy.write_text(Path(module.__file__).read_text() + "# an edit\n")
        monkeypatch.setattr(module, "__file__", str(copy))

    return edit


@pytest.fixture(scope="session")
def billetjax_modules_loaded_by():
    """A function: `billetjax_modules_loaded_by("billetjax.x")` lists, sorted, the billetjax modules a
    fresh interpreter holds after importing that module (what a training's fingerprint must cover)."""
    import subprocess
    import sys

    def loaded(module_name: str) -> list[str]:
        return subprocess.run(
            [sys.executable, "-c", f"import sys, {module_name}; "
             "print(*sorted(m for m in sys.modules if m.split('.')[0] == 'billetjax'))"],
            capture_output=True, text=True, check=True).stdout.split()

    return loaded


@pytest.fixture(scope="session")
def table1_of(make_config):
    """A function: Table 1 (`billetjax.experiments.table1`) of config.yaml with this `experiments`
    section laid over it (schema defaults filled in), e.g. `table1_of({"images": 40, "sets": [...]})`."""
    from billetjax.experiments import table1

    def build(experiments: dict, synth_method: str = "gan"):
        return table1(make_config({"experiments": experiments})["experiments"], synth_method)

    return build


SNAKEFILE = ROOT / "Snakefile"
SMOKE = ROOT / "tests/presets/smoke.yaml"


def _run_snakemake(workdir: Path, *args: str, timeout: int = 1500, snakefile: str | Path = SNAKEFILE):
    """`snakemake` in `workdir` (its results/, logs/ there) with the repository's Snakefile (or
    `snakefile`), as a user runs it; returns the CompletedProcess (stdout and stderr captured)."""
    import subprocess
    import sys

    Path(workdir).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> Path:
    """The whole study on the smoke preset, run once per session; its working directory.
    Treat it as read-only: a test that changes things copies it first."""
    workdir = tmp_path_factory.mktemp("smoke")
    result = _run_snakemake(workdir, "--configfile", str(SMOKE), "--cores", "2", "--resources", "gpu=1",
                           "--retries", "0")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return workdir


@pytest.fixture(scope="session")
def run_snakemake():
    """A function: `run_snakemake(workdir, *args, timeout=1500, snakefile=...)` runs the
    repository's workflow (or another Snakefile) in `workdir` as a user does and returns the
    CompletedProcess."""
    return _run_snakemake


@pytest.fixture(scope="session")
def smoke_preset() -> Path:
    """tests/presets/smoke.yaml: the whole study at toy size."""
    return SMOKE


def _job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from Snakemake's 'Job stats' table in a dry run's output (without 'total')."""
    import re

    counts = {}
    for line in output.splitlines():
        m = re.fullmatch(r"\s*([a-z_0-9]+)\s+(\d+)\s*", line)
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture(scope="session")
def job_counts():
    """A function: `job_counts(output)` reads {rule: jobs} from the 'Job stats' table that a
    `snakemake -n` run prints."""
    return _job_counts


# ------------------------------------------------------------------ evaluation builders
# A small test set whose detections carry known errors; the expected metrics are counted by hand
# in the docstring of `controlled_detections` (TP 85, MC 5, FN 15, FP 2.5, CB 25, ID read rate 25 %).

EVAL_BILLETS = 20  # billets of the evaluation test set, 10 characters each


def _char_box(j: int) -> list[float]:
    """Ten characters in two rows of five."""
    return [10.0 + 20.0 * (j % 5), 8.0 + 26.0 * (j // 5), 12.0, 18.0]


def _write_evaluation_test_set(folder: str | Path, name: str = "testset3.json") -> str:
    """20 billets x 10 characters (digits, category id = digit + 1), small 120x60 images so the
    gallery can draw them; written to `folder/name` with images in `folder/images/`."""
    import numpy as np

    from billetjax import coco as cc

    folder = Path(folder)
    coco = cc.empty_dataset()
    rng = np.random.default_rng(0)
    for i in range(EVAL_BILLETS):
        digits = [(i + j) % 10 for j in range(10)]
        file = folder / "images" / f"b{i:02d}.png"
        cc.write_image(file, rng.integers(90, 160, size=(60, 120, 3), dtype=np.uint8))
        coco["images"].append({"id": 100 + i, "file_name": f"images/b{i:02d}.png", "width": 120, "height": 60,
                               "site": "AB"[i % 2], "visibility": "poor", "source": "real",
                               "billet_id": "".join(map(str, digits[:5])) + " " + "".join(map(str, digits[5:]))})
        for j, d in enumerate(digits):
            coco["annotations"].append({"id": 10 * i + j + 1, "image_id": 100 + i, "category_id": d + 1,
                                        "bbox": _char_box(j), "area": 216.0, "iscrowd": 0})
    path = folder / name
    cc.save(path, coco)
    return str(path)


def _controlled_detections(coco: dict) -> list[dict]:
    """Detections of `_write_evaluation_test_set`'s billets with known errors. From the GT: billets
    0-9 lose 2 characters each (20 of 200 = 10 % FN beyond the misreads), billets 10-14 get 2 wrong
    labels each (10 = 5 % MC), billets 0-4 one false positive each (5 = 2.5 % FP), billet 15 a
    low-score wrong duplicate (ignored); billets 15-19 are read perfectly (CB 5 / 20 = 25 %).
    So TP 170 (85 %), FN 30 (15 %). Works on a copy whose category ids were renumbered, as long as
    the digit d keeps its place in ascending-name order (the wrong label is the next digit)."""
    by_name = {c["name"]: c["id"] for c in coco["categories"]}
    name_of = {c["id"]: c["name"] for c in coco["categories"]}
    dets = []
    for ann in coco["annotations"]:
        i, j = ann["image_id"] - 100, (ann["id"] - 1) % 10
        cat = ann["category_id"]
        wrong = by_name[str((int(name_of[cat]) + 1) % 10)]
        if i < 10 and j in (3, 7):
            continue
        if 10 <= i < 15 and j in (0, 5):
            cat = wrong
        dets.append({"image_id": ann["image_id"], "category_id": cat, "bbox": ann["bbox"], "score": 0.9})
        if i == 15 and j == 2:
            dets.append({"image_id": ann["image_id"], "category_id": wrong, "bbox": ann["bbox"], "score": 0.3})
    for i in range(5):
        dets.append({"image_id": 100 + i, "category_id": by_name["3"], "bbox": [104.0, 5.0, 10.0, 15.0],
                     "score": 0.8})
    return dets


@pytest.fixture(scope="session")
def write_evaluation_test_set():
    """A function: `write_evaluation_test_set(folder, name="testset3.json")` writes 20 billets of
    10 digits each (COCO + PNG images) and returns the JSON's path."""
    return _write_evaluation_test_set


@pytest.fixture(scope="session")
def controlled_detections():
    """A function: `controlled_detections(coco)` returns detections of the evaluation test set with
    hand-counted errors: TP 85, MC 5, FN 15, FP 2.5, CB 25 and ID read rate 25 (percent)."""
    return _controlled_detections


def _write_digit_set(folder, n_images: int, size_px: int = 128, digits: int = 5, seed: int = 0,
                    height_px: tuple[int, int] = (18, 30)) -> str:
    """A tiny COCO set of shaded glyph stamps on a textured surface, written to `folder`."""
    import numpy as np
    import shapely.affinity

    from billetjax import coco as cc
    from billetjax.glyphs import glyph, rasterise

    rng = np.random.default_rng(seed)
    dataset = cc.empty_dataset(description="detector test digits")
    json_path = f"{folder}/digits.json"
    ann_id = 1
    for i in range(n_images):
        base = rng.uniform(90, 160)
        surface = base + rng.normal(0, 6, (size_px, size_px)).cumsum(1) * 0.05
        surface += rng.normal(0, 3, (size_px, size_px))
        depth = np.zeros((size_px, size_px), np.float32)
        taken: list[tuple[float, float, float, float]] = []
        labels, chars = [], ""
        for _ in range(digits * 20):
            if len(labels) == digits:
                break
            char = str(rng.integers(0, 10))
            h = rng.uniform(*height_px)
            poly = glyph(char)
            x0, y0, x1, y1 = poly.bounds
            s = h / (y1 - y0)
            w = (x1 - x0) * s
            ox, oy = rng.uniform(2, size_px - w - 2), rng.uniform(2, size_px - h - 2)
            box = (ox, oy, ox + w, oy + h)
            if any(not (box[2] < t[0] - 2 or box[0] > t[2] + 2 or box[3] < t[1] - 2 or box[1] > t[3] + 2)
                   for t in taken):
                continue
            placed = shapely.affinity.affine_transform(poly, [s, 0, 0, s, ox - s * x0, oy - s * y0])
            depth = np.maximum(depth, rasterise(placed, size_px, antialiased=True) / 255.0)
            taken.append(box)
            bx, by, bx2, by2 = placed.bounds
            labels.append((char, [bx, by, bx2 - bx, by2 - by]))
            chars += char
        # Shading of a punched depression: darker inside, lit edge on one side.
        gy, gx = np.gradient(depth)
        image = surface - 45 * depth + 60 * (gx + gy)
        rgb = np.clip(np.stack([image * 1.05, image, image * 0.9], -1), 0, 255).astype(np.uint8)
        file = f"{folder}/img{i:03d}.png"
        cc.write_image(file, rgb)
        dataset["images"].append({"id": i + 1, "file_name": f"img{i:03d}.png", "width": size_px,
                                  "height": size_px, "site": "A", "visibility": "well",
                                  "billet_id": chars, "source": "real"})
        for char, bbox in labels:
            dataset["annotations"].append({
                "id": ann_id, "image_id": i + 1, "category_id": int(char) + 1, "bbox": bbox,
                "area": bbox[2] * bbox[3], "iscrowd": 0,
                "segmentation": [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1],
                                  bbox[0] + bbox[2], bbox[1] + bbox[3], bbox[0], bbox[1] + bbox[3]]],
            })
            ann_id += 1
    cc.save(json_path, dataset)
    return json_path


@pytest.fixture(scope="session")
def write_digit_set():
    """A function: `write_digit_set(folder, n_images, size_px=128, digits=5, seed=0,
    height_px=(18, 30))` writes a tiny COCO set of shaded digit stamps and returns its JSON path."""
    return _write_digit_set
