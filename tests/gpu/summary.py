"""`python tests/gpu/summary.py OUT REHEARSE`: the GPU check's summary (tests/gpu/check.sh).

Reads `OUT/steps.tsv` (step, exit status, seconds) and each step's last JSON line `OUT/<step>.json`,
writes `OUT/summary.json` and prints one line per step: steps/s, images/s and peak memory where
the step reports them. Standard library only: it runs in whatever Python the check uses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The speed goals on one H100 for the paper preset (README.md, "The GPU path"), shown beside the figures.
GOALS = {"paper_detector": ("images_per_s", 40.0), "paper_pix2pix": ("steps_per_s", 100.0)}


def _read_json(path: Path) -> dict | None:
    try:
        text = path.read_text().strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _gib(value) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB"


def _num(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summarise(out: Path, rehearsal: bool) -> dict:
    steps = {}
    for line in (out / "steps.tsv").read_text().splitlines():
        name, rc, seconds = line.split("\t")
        steps[name] = {"exit": int(rc), "seconds": int(seconds), "result": _read_json(out / f"{name}.json")}
    summary = {
        "rehearsal_on_cpu": rehearsal,
        "gpus": (out / "nvidia-smi.log").read_text().splitlines() if (out / "nvidia-smi.log").exists() else [],
        "jax": (out / "jax.log").read_text().strip() if (out / "jax.log").exists() else None,
        "passed": all(s["exit"] == 0 for s in steps.values()),
        "total_seconds": sum(s["seconds"] for s in steps.values()),
        "steps": steps,
    }
    goals = {}
    for name, (key, goal) in GOALS.items():
        result = (steps.get(name) or {}).get("result") or {}
        if key in result and not rehearsal:
            goals[name] = {"key": key, "value": result[key], "goal": goal, "met": result[key] >= goal}
    summary["goals"] = goals
    return summary


def report(summary: dict) -> str:
    rows = [f"{'step':16} {'exit':>4} {'time':>6}  figures"]
    for name, s in summary["steps"].items():
        r = s["result"] or {}
        if name.startswith("paper_"):
            figures = (f"{_num(r.get('steps_per_s'))} steps/s, {_num(r.get('images_per_s'))} images/s, "
                       f"device peak {_gib(r.get('device_peak_bytes_in_use'))} (XLA: {_gib(r.get('peak_bytes'))}), "
                       f"compile {_num(r.get('compile_s'), 1)} s")
        elif name.startswith("bench_"):
            figures = (f"ours {_num(r.get('ours_steps_per_s'))} steps/s, peer (CPU) "
                       f"{_num(r.get('peer_steps_per_s'))}, ratio {_num(r.get('ratio'))}")
            if "ours_inference_images_per_s" in r:
                figures += f", inference {_num(r.get('ours_inference_images_per_s'), 1)} images/s"
        else:
            figures = ""
        rows.append(f"{name:16} {s['exit']:>4} {s['seconds']:>5}s  {figures}")
    for name, g in summary["goals"].items():
        rows.append(f"goal {name}: {g['key']} {g['value']:.1f} against {g['goal']:.0f}: "
                    f"{'met' if g['met'] else 'NOT met'}")
    if summary["rehearsal_on_cpu"]:
        rows.append("rehearsal on the CPU at toy sizes: these figures say nothing about a GPU")
    rows.append(f"{'passed' if summary['passed'] else 'FAILED'} in {summary['total_seconds']} s")
    return "\n".join(rows)


def main() -> None:
    out, rehearsal = Path(sys.argv[1]), sys.argv[2] == "1"
    summary = summarise(out, rehearsal)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(report(summary))
    print(f"summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
