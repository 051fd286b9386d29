"""`python -m billetjax.bench pix2pix|detector|steps|ocr-peer|read [options]`: run one benchmark;
its last line is JSON. `pix2pix` and `detector` time ours against PyTorch; `steps` runs N training
steps of a config's model alone (the GPU check's throughput); `ocr-peer` scores a zero-shot
general OCR's whole-ID reading on the test sets beside ours; `read` times reading a folder of
frames end to end against the detector's inference alone."""

import importlib
import sys

BENCHMARKS = {
    "pix2pix": "billetjax.bench.pix2pix",
    "detector": "billetjax.bench.detector",
    "steps": "billetjax.bench.steps",
    "ocr-peer": "billetjax.bench.ocr_peer",
    "read": "billetjax.bench.read",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        sys.exit(f"usage: python -m billetjax.bench {{{'|'.join(BENCHMARKS)}}} [options]")
    name = sys.argv[1]
    importlib.import_module(BENCHMARKS[name]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
