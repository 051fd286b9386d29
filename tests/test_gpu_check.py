"""`make gpu-check` (tests/gpu/check.sh) on a machine without a GPU: the script parses, and its summary
(tests/gpu/summary.py) states the speed goals and failed steps from hand-made step results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "tests/gpu/check.sh")]).returncode == 0


def _gpu_check_folder(folder: Path, paper_detector_images_per_s: float, pix2pix_exit: int) -> Path:
    """An OUT folder as check.sh leaves it (hand-made step results, not measurements)."""
    (folder / "steps.tsv").write_text(
        f"smoke\t0\t200\npaper_detector\t0\t150\npaper_pix2pix\t{pix2pix_exit}\t40\n")
    (folder / "smoke.json").write_text("")
    (folder / "paper_detector.json").write_text(json.dumps(
        {"steps_per_s": paper_detector_images_per_s / 8, "images_per_s": paper_detector_images_per_s,
         "device_peak_bytes_in_use": 3 * 2**30, "peak_bytes": 2**32, "compile_s": 60.0}))
    (folder / "paper_pix2pix.json").write_text(json.dumps({"steps_per_s": 120.0, "images_per_s": 120.0}))
    return folder


def test_gpu_check_summary_states_goals_and_failures(tmp_path):
    out = _gpu_check_folder(tmp_path, 32.0, pix2pix_exit=1)
    printed = subprocess.run([sys.executable, str(ROOT / "tests/gpu/summary.py"), str(out), "0"],
                             capture_output=True, text=True, check=True).stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False and summary["total_seconds"] == 390
    assert summary["goals"]["paper_detector"] == {"key": "images_per_s", "value": 32.0, "goal": 40.0,
                                                  "met": False}
    assert summary["goals"]["paper_pix2pix"]["met"] is True
    assert "32.00 images/s" in printed and "3.00 GiB" in printed and "FAILED" in printed
    # a rehearsal on the CPU judges no goal
    (tmp_path / "rehearsal").mkdir()
    rehearsal = _gpu_check_folder(tmp_path / "rehearsal", 50.0, 0)
    subprocess.run([sys.executable, str(ROOT / "tests/gpu/summary.py"), str(rehearsal), "1"], check=True,
                   capture_output=True)
    summary = json.loads((rehearsal / "summary.json").read_text())
    assert summary["passed"] and summary["rehearsal_on_cpu"] and summary["goals"] == {}
