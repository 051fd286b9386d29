"""`python -m billetjax.bench pix2pix|detector [options]`: run one benchmark; its last line is JSON."""

import importlib
import sys

BENCHMARKS = {
    "pix2pix": "billetjax.bench.pix2pix",
    "detector": "billetjax.bench.detector",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        sys.exit(f"usage: python -m billetjax.bench {{{'|'.join(BENCHMARKS)}}} [options]")
    name = sys.argv[1]
    importlib.import_module(BENCHMARKS[name]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
