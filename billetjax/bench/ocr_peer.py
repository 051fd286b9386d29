"""Benchmark: whole-ID reading by a zero-shot general OCR beside ours, on the workflow's test sets.

The peer is RapidOCR (`rapidocr-onnxruntime`, the ONNX wheel that ships its detection and
recognition models, so it runs offline; install it with `pip install -e .[ocr-peer]`: it is no
dependency of the workflow). Its wheel requires opencv-python, whose `cv2` overwrites the files of
our opencv-python-headless in the same environment (a job running meanwhile can die of SIGBUS);
install it while nothing runs, and restore the headless build afterwards with
`pip install --force-reinstall --no-deps opencv-python-headless==<the same version>`. It reads each test image whole, untrained on billets; its text lines
are put in reading order (top to bottom by their upper edge, rows within half a line height
left to right), joined, and reduced to the characters of the test set's categories. Its
confidence is the lowest line score; no text is a reject. Scored as ours (docs/id-reading.md):
read rate without reject, the read rate at each misread level of the config, and the same with
the ID's grammar as a check on the peer's string (an invalid string is rejected).

Ours come from the workflow's metrics files of one experiment and seed
(`results/metrics/exp{e}/seed{s}/testset{n}.json`), when they exist: plain, pattern and lexicon.

The last printed line is JSON: {"test_sets": {n: {"peer": {...}, "ours": {...}}}, "peer_images_per_s"}.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from billetjax import coco as cc
from billetjax.bench.work import ROOT, load_config
from billetjax.data.lexicon import normalise_id
from billetjax.evaluation.billet_id import IdPattern
from billetjax.evaluation.id_metrics import level_name, read_at_misread, read_misread_curve

# A text line: (corner points [[x, y], ...], text, score), as RapidOCR returns them.
Line = tuple[list[list[float]], str, float]


def peer_reading(lines: list[Line] | None, alphabet: str) -> tuple[str | None, float]:
    """The peer's ID from its text lines: reading order, joined, the alphabet's characters only;
    (None, nan) without any."""
    if not lines:
        return None, float("nan")
    boxes = [(min(p[1] for p in pts), max(p[1] for p in pts), min(p[0] for p in pts), text, float(score))
             for pts, text, score in lines]
    height = float(np.median([b[1] - b[0] for b in boxes]))
    boxes.sort(key=lambda b: b[0])
    rows: list[list[tuple]] = []
    for b in boxes:
        if rows and b[0] - rows[-1][0][0] < 0.5 * height:
            rows[-1].append(b)
        else:
            rows.append([b])
    ordered = [b for row in rows for b in sorted(row, key=lambda b: b[2])]
    text = "".join(c for b in ordered for c in b[3] if c in alphabet)
    if not text:
        return None, float("nan")
    return text, min(b[4] for b in ordered)


def score(truth: list[str], readings: list[tuple[str | None, float]], levels: list[float],
          pattern: IdPattern | None) -> dict:
    """Read rate (no reject) and read rates at the misread levels, plain and with the grammar check."""
    correct = np.array([r[0] == t for t, r in zip(truth, readings)], dtype=bool)
    confidence = np.array([r[1] if r[0] is not None else np.nan for r in readings], dtype=np.float64)
    out = {"n_billets": len(truth), "id_read_rate": 100.0 * float(correct.mean()) if len(truth) else float("nan")}
    curve = read_misread_curve(correct, confidence)
    out.update({level_name("peer", x): read_at_misread(curve, x) for x in levels})
    if pattern is not None:
        valid = np.array([r[0] is not None and pattern.matches(r[0]) for r in readings], dtype=bool)
        checked = np.where(valid, confidence, np.nan)
        out["id_read_rate_pattern"] = 100.0 * float((correct & valid).mean()) if len(truth) else float("nan")
        curve = read_misread_curve(correct, checked)
        out.update({level_name("peer_pattern", x): read_at_misread(curve, x) for x in levels})
    return out


def read_test_set(gt_path: Path, engine: Callable, limit: int | None) -> tuple[list[str], list, float]:
    """Run the peer on a test set's images with an ID: (truth IDs, readings, seconds of OCR)."""
    import cv2

    coco = cc.load(gt_path, require_extras=False)
    alphabet = "".join(str(c["name"]) for c in coco["categories"])
    images = [img for img in coco["images"] if normalise_id(img.get("billet_id") or "")][:limit]
    truth, readings, seconds = [], [], 0.0
    for img in images:
        frame = cv2.imread(str(gt_path.parent / img["file_name"]), cv2.IMREAD_COLOR)
        if frame is None:
            raise FileNotFoundError(f"{gt_path}: image {img['file_name']} cannot be read")
        start = time.perf_counter()
        lines, _ = engine(frame)
        seconds += time.perf_counter() - start
        truth.append(normalise_id(img["billet_id"]))
        readings.append(peer_reading(lines, alphabet))
    return truth, readings, seconds


def ours(metrics_path: Path, levels: list[float]) -> dict | None:
    """Our whole-ID metrics of one run, where its metrics file exists."""
    if not metrics_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text())["metrics"]
    keys = ["id_read_rate", "id_read_rate_pattern", "id_read_rate_lexicon"] + [
        level_name(v, x) for v in ("plain", "pattern", "lexicon") for x in levels]
    return {k: metrics.get(k) for k in keys}


def _pct(value) -> str:
    """A rate for the log line; '-' where the run had none (null in its metrics file)."""
    return "-" if value is None else f"{value:.1f} %"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m billetjax.bench ocr-peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"),
                        help="config whose test sets, grammar and misread levels apply (merged over config.yaml)")
    parser.add_argument("--results", default="results", help="the workflow's results folder")
    parser.add_argument("--experiment", type=int, default=1, help="our run to compare with")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="at most this many billets per test set")
    args = parser.parse_args(argv)
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        raise SystemExit("the OCR peer needs rapidocr-onnxruntime: pip install -e .[ocr-peer]") from None

    config = load_config(args.config)
    reading = config["evaluation"]["id_reading"]
    levels = [float(x) for x in reading["misread_levels_pct"]]
    results = Path(args.results)
    engine = RapidOCR()
    report: dict = {"test_sets": {}}
    total_s, total_n = 0.0, 0
    for n in range(1, len(config["data"]["test_sets"]) + 1):
        gt_path = results / f"data/testsets/testset{n}.json"
        if not gt_path.is_file():
            raise SystemExit(f"{gt_path} not found: make the test sets first (snakemake {gt_path})")
        categories = cc.load(gt_path, require_extras=False)["categories"]
        names = [str(c["name"]) for c in sorted(categories, key=lambda c: int(c["id"]))]
        pattern = IdPattern.from_config(config["evaluation"]["id_pattern"], names)
        truth, readings, seconds = read_test_set(gt_path, engine, args.limit)
        total_s, total_n = total_s + seconds, total_n + len(truth)
        peer = score(truth, readings, levels, pattern)
        mine = ours(results / f"metrics/exp{args.experiment}/seed{args.seed}/testset{n}.json", levels)
        report["test_sets"][n] = {"peer": peer, "ours": mine}
        print(f"test set {n}: the peer reads {peer['id_read_rate']:.1f} % of {peer['n_billets']} IDs"
              + (f" (with the grammar check {peer['id_read_rate_pattern']:.1f} %)" if pattern else "")
              + ("; ours: " + ", ".join(f"{label} {_pct(mine[key])}" for label, key in (
                  ("plain", "id_read_rate"), ("grammar", "id_read_rate_pattern"), ("lexicon", "id_read_rate_lexicon")))
                 if mine else "; no metrics of ours"),
              flush=True)
    report["peer_images_per_s"] = total_n / total_s if total_s > 0 else float("nan")
    report["peer"] = "rapidocr-onnxruntime (zero-shot)"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
