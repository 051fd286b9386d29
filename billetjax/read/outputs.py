"""What reading a folder writes (docs/reading.md), every file one row or record per input file:

- `reads.csv`: `file, status, billet_id, id_valid, n_characters, min_score, mean_score`, then
  `decoder, confidence, rejected, width, height, orientation, message`;
- `detections.json`: COCO results (the user's category ids; `image_id` as in `cvat_coco.json`);
- `labelstudio_tasks.json`: Label Studio tasks with `rectanglelabels` predictions (pre-annotations);
- `cvat_coco.json`: a COCO 1.0 file that CVAT imports as annotations (Upload annotations);
- `to_label_first.csv`: the frames a human is most needed for, first;
- `least_certain.png`: a gallery of the least certain readings.

Pre-labels (Label Studio, CVAT) and readings hold the characters at or above the reading's score
threshold; `detections.json` holds everything the detector keeps (for mAP and re-thresholding).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from billetjax.data.lexicon import load_lexicon
from billetjax.evaluation.billet_id import IdPattern, read_billets
from billetjax.read.pipeline import FrameReading, ReadOptions
from billetjax.read.reader import Reader
from billetjax.files import atomic_write_bytes

log = logging.getLogger(__name__)

READS_COLUMNS = ["file", "status", "billet_id", "id_valid", "n_characters", "min_score", "mean_score",
                 "decoder", "confidence", "rejected", "width", "height", "orientation", "message"]
RANK_COLUMNS = ["rank", "file", "reason", "billet_id", "id_valid", "min_score", "confidence", "status"]
OUTPUT_FILES = {"reads": "reads.csv", "detections": "detections.json", "labelstudio": "labelstudio_tasks.json",
                "cvat": "cvat_coco.json", "to_label_first": "to_label_first.csv", "gallery": "least_certain.png"}
# Percentages in Label Studio's values, and pixels in the COCO files, keep this many decimals.
DECIMALS = 3


def kept(r: FrameReading, threshold: float) -> np.ndarray:
    """Indices of a frame's detections at or above the reading's score threshold."""
    return np.flatnonzero(r.scores >= threshold)


def decode_ids(readings: list[FrameReading], reader: Reader, options: ReadOptions) -> None:
    """Read the whole ID of every frame (`billetjax.evaluation.billet_id.read_billets`): the lexicon
    decoder where a lexicon is given, else the pattern decoder where `id_pattern` is set, else the
    plain reading; below `min_confidence` a reading is rejected. Fills each `reading`."""
    reading = reader.meta["reading"]
    categories = reader.categories
    names = [c["name"] for c in categories]
    pattern = IdPattern.from_config(reading["id_pattern"], names)
    lexicon = load_lexicon(options.lexicon) if options.lexicon else None
    decoder = "lexicon" if lexicon else "pattern" if pattern else "plain"
    threshold = float(reading["score_threshold"])
    # a reader exported before the decoders read weaker detections: they read what the plain reading reads
    floor = float(reading.get("decoder_min_score", threshold))
    images = [{"id": i + 1, "billet_id": ""} for i in range(len(readings))]
    order = np.argsort([c["id"] for c in categories], kind="stable")  # class_scores by ascending id
    detections = []
    for i, r in enumerate(readings):
        for j in kept(r, min(threshold, floor)):
            x1, y1, x2, y2 = r.boxes[j]
            detections.append({"image_id": i + 1, "category_id": int(categories[r.labels[j]]["id"]),
                               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(r.scores[j]),
                               "class_scores": [float(r.class_scores[j][k]) for k in order]})
    coco_gt = {"images": images, "annotations": [], "categories": categories}
    records = read_billets(coco_gt, detections, score_threshold=threshold, pattern=pattern, lexicon=lexicon,
                           miss_probability=float(reading["miss_probability"]), decoder_min_score=floor)
    for r, record in zip(readings, records):
        if r.frame.status != "read":
            continue
        scores = r.scores[kept(r, threshold)]
        text, confidence = record[f"read_{decoder}"], record[f"confidence_{decoder}"]
        r.reading = {
            "billet_id": text or "",
            "id_valid": (pattern.matches(text) if text else False) if pattern else None,
            "n_characters": int(len(scores)),
            "min_score": float(scores.min()) if len(scores) else None,
            "mean_score": float(scores.mean()) if len(scores) else None,
            "decoder": decoder,
            "confidence": float(confidence or 0.0),
            "rejected": text is None or float(confidence or 0.0) < float(reading["min_confidence"]),
        }


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    os.replace(tmp, path)


def reads_rows(readings: list[FrameReading]) -> list[dict]:
    """One row per file for reads.csv (a file that was not read: its status and message only)."""
    rows = []
    for r in readings:
        row = {"file": r.frame.name, "status": r.frame.status, "message": r.frame.message}
        if r.frame.status == "read":
            fm = r.frame.frame_map
            row.update(r.reading, width=fm.width, height=fm.height, orientation=fm.orientation)
        rows.append(row)
    return rows


def need_ranking(readings: list[FrameReading]) -> list[dict]:
    """Frames by how much a human is needed: readings that fail the ID pattern, are rejected or
    found no character first; then by the weakest character's score (least certain first); files
    that could not be read last (they need a new picture, not a label)."""
    rows = []
    for r in readings:
        if r.frame.status != "read":
            rows.append({"file": r.frame.name, "status": r.frame.status, "reason": f"not read: {r.frame.status}",
                         "_key": (2, 0.0)})
            continue
        g = r.reading
        reasons = []
        if g["n_characters"] == 0:
            reasons.append("no character found")
        if g["id_valid"] is False:
            reasons.append("reading fails the ID pattern")
        if g["rejected"]:
            reasons.append("reading rejected (confidence below min_confidence)")
        weakest = g["min_score"] if g["min_score"] is not None else 0.0
        reasons.append(f"weakest character {weakest:.2f}")
        rows.append({"file": r.frame.name, "status": "read", "reason": "; ".join(reasons),
                     "billet_id": g["billet_id"], "id_valid": g["id_valid"], "min_score": g["min_score"],
                     "confidence": g["confidence"], "_key": (0 if len(reasons) > 1 else 1, weakest)})
    rows.sort(key=lambda row: row["_key"])  # stable: file order within ties
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def coco_results(readings: list[FrameReading], reader: Reader) -> list[dict]:
    """Every detection the detector kept, in the displayed frames, as COCO results with the user's
    category ids and `class_scores` (ascending category id); `image_id` = the file's position + 1."""
    categories = reader.categories
    order = np.argsort([c["id"] for c in categories], kind="stable")
    ids = np.array([int(c["id"]) for c in categories])
    results = []
    for i, r in enumerate(readings):
        if not len(r.scores):
            continue
        xywh = np.round(np.concatenate([r.boxes[:, :2], r.boxes[:, 2:] - r.boxes[:, :2]], axis=1), DECIMALS).tolist()
        scores = np.round(r.scores, 5).tolist()
        class_scores = np.round(r.class_scores[:, order], 5).tolist()
        for j, category in enumerate(ids[r.labels].tolist()):
            results.append({"image_id": i + 1, "category_id": category, "bbox": xywh[j], "score": scores[j],
                            "class_scores": class_scores[j]})
    return results


def cvat_coco(readings: list[FrameReading], reader: Reader) -> dict:
    """A COCO 1.0 file as CVAT imports it (Upload annotations, format "COCO 1.0"): images named by
    their file name (CVAT matches them to the task's images by name), rectangles with
    `segmentation: []` and CVAT's per-shape attributes, the user's category ids and names. Only the
    frames that were read, and their characters at or above the reading's threshold."""
    threshold = float(reader.meta["reading"]["score_threshold"])
    categories = sorted(reader.categories, key=lambda c: c["id"])
    images, annotations = [], []
    for i, r in enumerate(readings):
        if r.frame.status != "read":
            continue
        fm = r.frame.frame_map
        images.append({"id": i + 1, "width": fm.width, "height": fm.height, "file_name": r.frame.name,
                       "license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0})
        for j in kept(r, threshold):
            x1, y1, x2, y2 = (round(float(v), DECIMALS) for v in r.boxes[j])
            w, h = round(x2 - x1, DECIMALS), round(y2 - y1, DECIMALS)
            if w <= 0 or h <= 0:
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(reader.categories[r.labels[j]]["id"]), "segmentation": [],
                                "area": round(w * h, DECIMALS), "bbox": [x1, y1, w, h], "iscrowd": 0,
                                "attributes": {"occluded": False, "rotation": 0.0,
                                               "score": round(float(r.scores[j]), 4)}})
    return {"licenses": [{"name": "", "id": 0, "url": ""}],
            "info": {"contributor": "billetjax reader", "date_created": "", "description": "pre-labels",
                     "url": "", "version": reader.meta["code_version"], "year": ""},
            "categories": [{"id": int(c["id"]), "name": c["name"], "supercategory": ""} for c in categories],
            "images": images, "annotations": annotations}


def labelstudio_tasks(readings: list[FrameReading], reader: Reader, options: ReadOptions) -> list[dict]:
    """Label Studio tasks, one per frame that was read, with the detector's characters as a
    `predictions` entry of `rectanglelabels` results: x, y, width, height in percent of
    `original_width` / `original_height` (the displayed frame), `from_name` / `to_name` as the
    labelling config names its RectangleLabels and Image tags."""
    threshold = float(reader.meta["reading"]["score_threshold"])
    model_version = f"billetjax {reader.meta['code_version']}"
    detector = reader.meta.get("detector") or {}
    if detector.get("experiment") is not None:
        model_version += f" exp{detector['experiment']} seed{detector['seed']}"
    tasks = []
    for i, r in enumerate(readings):
        if r.frame.status != "read":
            continue
        fm = r.frame.frame_map
        results = []
        for j in kept(r, threshold):
            x1, y1, x2, y2 = r.boxes[j]
            if x2 <= x1 or y2 <= y1:
                continue
            results.append({
                "id": f"f{i + 1}c{len(results) + 1}", "type": "rectanglelabels",
                "from_name": options.from_name, "to_name": options.to_name,
                "original_width": fm.width, "original_height": fm.height, "image_rotation": 0,
                "value": {"x": round(100 * x1 / fm.width, DECIMALS), "y": round(100 * y1 / fm.height, DECIMALS),
                          "width": round(100 * (x2 - x1) / fm.width, DECIMALS),
                          "height": round(100 * (y2 - y1) / fm.height, DECIMALS), "rotation": 0,
                          "rectanglelabels": [reader.categories[r.labels[j]]["name"]]},
                "score": round(float(r.scores[j]), 4)})
        image = r.frame.name if options.image_root is None else options.image_root + r.frame.name
        g = r.reading
        tasks.append({"data": {options.data_key: image, "billet_id": g["billet_id"]},
                      "predictions": [{"model_version": model_version,
                                       "score": round(g["min_score"], 4) if g["min_score"] is not None else 0.0,
                                       "result": results}]})
    return tasks


def write_json(path: Path, value) -> None:
    """Compact JSON (a folder of frames makes thousands of records), written atomically."""
    atomic_write_bytes(path, json.dumps(value, separators=(",", ":")).encode())


def write_outputs(readings: list[FrameReading], reader: Reader, options: ReadOptions, out_dir: str | os.PathLike,
                  root: Path, gallery: bool = True) -> dict[str, Path]:
    """Decode the IDs and write every file of the module docstring into `out_dir`; their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / name for k, name in OUTPUT_FILES.items()}
    decode_ids(readings, reader, options)
    _write_csv(paths["reads"], READS_COLUMNS, reads_rows(readings))
    write_json(paths["detections"], coco_results(readings, reader))
    write_json(paths["labelstudio"], labelstudio_tasks(readings, reader, options))
    write_json(paths["cvat"], cvat_coco(readings, reader))
    ranking = need_ranking(readings)
    _write_csv(paths["to_label_first"], RANK_COLUMNS, ranking)
    if gallery:
        from billetjax.read.gallery import least_certain_gallery

        least_certain_gallery(readings, ranking, reader, options.gallery_frames, paths["gallery"])
    else:
        paths.pop("gallery")
    n_read = sum(r.frame.status == "read" for r in readings)
    log.info("%s: %d files, %d read; wrote %s", root, len(readings), n_read, ", ".join(p.name for p in paths.values()))
    return paths
