"""`python -m billetjax.read [--config my.yaml] [--experiment N] [--seed S] [--reader DIR] --out DIR IMAGES...`

Read frames (folders and/or files) with a trained detector outside Snakemake and write what
`snakemake results/read/reads.csv` writes (docs/reading.md). The detector is the exported reader
of experiment N, seed S of the study in the working directory
(`results/detector/exp{N}/seed{S}/reader/`; exported here first where only its weights exist),
or the reader directory given with `--reader` (a reader copied to another machine). `--config` is
laid over config.yaml as `snakemake --configfile` does (`billetjax.config.load_config`); the
experiment, seed and Label Studio names default to its `read` section, the reading's thresholds
and ID grammar to its `evaluation` section.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def reader_dir(experiment: int, seed: int, workdir: Path, config: dict) -> Path:
    """The study's reader of (experiment, seed), exported from its weights when it is not there yet."""
    from billetjax.read.reader import READER_FILES

    run = workdir / f"results/detector/exp{experiment}/seed{seed}"
    path = run / "reader"
    if all((path / name).is_file() for name in READER_FILES):
        return path
    params = run / "params.msgpack"
    train = workdir / f"results/experiments/exp{experiment}/seed{seed}/train.json"
    if not params.is_file() or not train.is_file():
        raise SystemExit(f"{params}: no trained detector of experiment {experiment}, seed {seed}; fix: train it with "
                         f"`snakemake {run / 'reader/reader.json'} --configfile <your config>` (or give --reader DIR)")
    from billetjax.read.export import export_reader

    export_reader(params, train, path, config, experiment, seed)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billetjax.read", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="folders of frames and/or frame files")
    parser.add_argument("--config", help="a config file laid over config.yaml (as snakemake --configfile)")
    parser.add_argument("--experiment", type=int, help="the detector's experiment (default: read.experiment)")
    parser.add_argument("--seed", type=int, help="the detector's seed (default: read.seed)")
    parser.add_argument("--reader", help="an exported reader directory (instead of experiment and seed)")
    parser.add_argument("--workdir", default=".", help="the study's directory (where results/ is)")
    parser.add_argument("--out", required=True, help="the folder the outputs are written into")
    parser.add_argument("--no-gallery", action="store_true", help="leave out least_certain.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from billetjax.config import ConfigError, load_config
    from billetjax.read import ReadOptions, load_reader, read_frames
    from billetjax.read.frames import ReadError

    try:
        config = load_config(*([args.config] if args.config else []))
    except (ConfigError, OSError, ValueError) as err:
        raise SystemExit(f"{args.config or 'config.yaml'}: {err}") from None
    read = config["read"]
    if args.reader:
        path = Path(args.reader)
    else:
        experiment = args.experiment if args.experiment is not None else read["experiment"]
        seed = args.seed if args.seed is not None else read["seed"]
        path = reader_dir(experiment, seed, Path(args.workdir), config)
    try:
        reader = load_reader(path)
    except (OSError, ValueError) as err:
        raise SystemExit(str(err)) from None
    if args.config:  # the user's reading settings over those the reader was exported with
        evaluation = config["evaluation"]
        reader.meta["reading"].update(score_threshold=float(evaluation["score_threshold"]),
                                      id_pattern=evaluation["id_pattern"],
                                      min_confidence=float(evaluation["id_reading"]["min_confidence"]),
                                      miss_probability=float(evaluation["id_reading"]["miss_probability"]),
                                      decoder_min_score=float(evaluation["id_reading"]["min_score"]))
    try:
        images = args.images[0] if len(args.images) == 1 and Path(args.images[0]).is_dir() else _expand(args.images)
        paths = read_frames(reader, images, args.out, ReadOptions.from_config(read), gallery=not args.no_gallery)
    except ReadError as err:
        raise SystemExit(str(err)) from None
    for path in paths.values():
        print(path)
    return 0


def _expand(items: list[str]) -> list[Path]:
    """Files given, and the files inside folders given (as a folder alone is read)."""
    from billetjax.read.frames import list_frames

    out: list[Path] = []
    for item in items:
        out += list_frames(item)[1] if Path(item).is_dir() else [Path(item)]
    return out


if __name__ == "__main__":
    sys.exit(main())
