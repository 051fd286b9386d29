"""What a config is: how one is loaded, typed and checked beyond what its JSON schema can say.

Every default has one owner: `schemas/config.schema.yaml`, which types each key, documents it and
fills in its default. `config.yaml` holds only the default study's own design (its experiments,
its ID scheme), never a value the schema already gives (`tests/test_config.py` holds the two
apart), and `docs/configuration.md` lists every key with its default, generated from the schema
(`python -m billetjax.config_reference`). Outside Snakemake, `load_config` builds a config the
way the workflow does; a stage turns its section into a frozen dataclass with
`billetjax.sections.typed` (standard library only, so that the detector can use it without this
check).

This module also checks what the schema cannot: values that are not finite numbers (YAML
`.nan`, `.inf`, which pass `minimum`/`maximum`), and rules that tie keys together (the image size
and the detector's strides, `detector.max_boxes` and the most characters on one image, the GAN's
checkpoints and those the synthesis draws from, ...). `rules/common.smk` calls `check_config`
right after `validate()`, so a bad config is refused by `snakemake -n`, before any job, with
every problem and the keys involved named, instead of failing hours later in a job.

The stages keep their own checks where they guard a library call; this is the first line.
Only stdlib at import time: the Snakemake process imports this module on every invocation.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from billetjax.data.userdata import normalised_category_names, user_data_problems
from billetjax.detector.geometry import BOTTLENECK_EXPANSION, backbone_strides, training_window_px

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = ROOT / "config.yaml"


class ConfigError(ValueError):
    """A config the workflow refuses; the message names every problem and its keys."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"config refused ({len(self.problems)} {noun}):\n{lines}")


def check_config(config: Mapping[str, Any]) -> None:
    """Raise `ConfigError` naming every problem of a schema-validated config (defaults filled in)."""
    found = problems(config)
    if found:
        raise ConfigError(found)


def problems(config: Mapping[str, Any]) -> list[str]:
    """Every problem of a schema-validated config, one message each (empty when it is fine).

    Non-finite numbers are reported alone: the other rules would only repeat them.
    """
    bad = [f"{path} = {value!r}: not a finite number (.nan / .inf are refused everywhere)"
           for path, value in non_finite(config)]
    if bad:
        return bad
    rows = experiment_row_problems(config)
    if rows:  # the other rules read Table 1, which such rows do not make
        return rows
    return [
        *detector_problems(config),
        *max_boxes_problems(config),
        *data_problems(config),
        *glyph_problems(config),
        *gan_problems(config),
        *synth_problems(config),
        *experiment_problems(config),
        *evaluation_problems(config),
        *read_problems(config),
        *problems_of_test_sets(config),
        *user_data_problems(config),
    ]


# ----------------------------------------------------------------------------- loading and typing


def load_config(*overlays: str | os.PathLike | Mapping[str, Any], base: str | os.PathLike | None = DEFAULT_CONFIG,
                check: bool = True) -> dict[str, Any]:
    """A config as the workflow builds it: `base` (config.yaml), each overlay (a YAML file, as
    `snakemake --configfile`, or a mapping, as `--config`) merged over it in turn, validated
    against the schema, which fills in the defaults, then `check_config` (unless `check=False`).

    The one loader of the package, the benchmarks and the tests.
    """
    import yaml
    from snakemake.utils import update_config, validate

    config: dict[str, Any] = {}
    for layer in ((base,) if base is not None else ()) + overlays:
        if isinstance(layer, Mapping):
            values = copy.deepcopy(dict(layer))  # the merge may change it
        else:
            values = yaml.safe_load(Path(layer).read_text(encoding="utf-8")) or {}
        update_config(config, values)
    validate(config, str(SCHEMA))
    if check:
        check_config(config)
    return config


# ----------------------------------------------------------------------------- helpers others use


def non_finite(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """(key path, value) of every NaN or infinite number in a nested config, e.g.
    ``("gan.learning_rate", nan)`` or ``("synth.embed.opacity[1]", inf)``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from non_finite(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from non_finite(item, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        yield path, value


def gan_checkpoints(config: Mapping[str, Any]) -> list[int]:
    """Steps at which the GAN keeps a generator checkpoint (each one a {ckpt} of the workflow)."""
    gan = config["gan"]
    return list(range(gan["checkpoint_every"], gan["steps"] + 1, gan["checkpoint_every"]))


def max_characters_per_image(config: Mapping[str, Any]) -> dict[str, int]:
    """The most annotated characters one training image can carry, per pool the experiments use:
    ``{"real": n, "synthetic": m}`` ("synthetic" only when some experiment mixes synthetic
    images in; "real" only when some experiment uses real ones and the count is known at parse
    time: for `data.source: coco` it is read from `data.coco.train`, and left out when that file
    is missing or unreadable, which the import job reports)."""
    from billetjax.experiments import table1

    rows = table1(config["experiments"], config["synth"]["method"])
    counts: dict[str, int] = {}
    if any(e.uses_real for e in rows):
        if config["data"]["source"] == "simulate":
            from billetjax.data.billet_ids import MAX_ID_CHARACTERS

            counts["real"] = MAX_ID_CHARACTERS
        else:
            most = most_annotations_per_image(config["data"]["coco"]["train"])
            if most is not None:
                counts["real"] = most
    if any(e.uses_synthetic for e in rows):
        counts["synthetic"] = int(config["synth"]["characters_per_image"])
    return counts


def _read_export(path: str) -> dict | None:
    """A user's COCO file as a dict, read once per parse (cached by size and modification time);
    None when it is missing or not JSON (the data stage's import refuses those by name)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return _read_export_version(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _read_export_version(path: str, size: int, mtime_ns: int) -> dict | None:
    try:
        with open(Path(path), encoding="utf-8-sig") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def most_annotations_per_image(path: str | None) -> int | None:
    """The most annotations with a positive-area bbox on one image of a COCO file (as the
    detector's input pipeline counts them), or None when the file is not set, missing or not a
    readable COCO file: the data stage's import refuses those with the file and record named."""
    data = _read_export(str(path)) if path else None
    if data is None:
        return None
    try:
        per_image = Counter()
        for ann in data.get("annotations", []):
            w, h = ann["bbox"][2], ann["bbox"][3]
            if w > 0 and h > 0:
                per_image[ann["image_id"]] += 1
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
    return max(per_image.values(), default=0)


def uses_synthesis(config: Mapping[str, Any]) -> bool:
    """Whether some experiment has synthetic images: only then do the GAN and synthesis run."""
    from billetjax.experiments import table1

    return any(e.uses_synthetic for e in table1(config["experiments"], config["synth"]["method"]))


def synthetic_sources(config: Mapping[str, Any]) -> list[str]:
    """The renderers (gan, classic) whose synthetic pools some experiment mixes in: a row's
    `synthetic_source`, else `synth.method`."""
    from billetjax.experiments import table1

    return sorted({e.source for e in table1(config["experiments"], config["synth"]["method"]) if e.uses_synthetic})


def glyph_requirement(config: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the study synthesises stamps (`uses_synthesis`), and from which glyph file
    (`synth.glyphs`, None = the built-in glyphs): every category then needs a glyph."""
    return {"needed": uses_synthesis(config), "glyph_file": config["synth"]["glyphs"]}


def annotated_category_names(path: str | None) -> list[str] | None:
    """Names of the categories that have annotations in a COCO file, or None when the file is not
    set or not readable (the import job names those problems)."""
    data = _read_export(str(path)) if path else None
    if data is None:
        return None
    try:
        used = {ann["category_id"] for ann in data["annotations"]}
        return sorted(str(c["name"]) for c in data["categories"] if c["id"] in used)
    except (TypeError, KeyError, IndexError, AttributeError):
        return None


# ----------------------------------------------------------------------------- rules per section


def detector_problems(config: Mapping[str, Any]) -> list[str]:
    """The backbone's geometry against the image size; anchor and sampling ranges."""
    out = []
    det = config["detector"]
    model = det["model"]
    widths, blocks = list(model["widths"]), list(model["blocks"])
    if len(blocks) != len(widths):
        out.append(f"detector.model.blocks has {len(blocks)} entries but detector.model.widths has "
                   f"{len(widths)}: give one block count per stage")
    strides = backbone_strides(len(widths))
    size = config["image_size_px"]
    # The feature pyramid's top-down path doubles each level back and must land on the level below
    # exactly: the image size must be a multiple of the coarsest stride.
    if size % strides[-1]:
        lower, upper = size - size % strides[-1], size - size % strides[-1] + strides[-1]
        out.append(
            f"image_size_px = {size} is not a multiple of the detector's coarsest stride "
            f"{strides[-1]} (detector.model.widths has {len(widths)} stages: strides "
            f"{', '.join(map(str, strides))}); use e.g. {' or '.join(str(s) for s in (lower, upper) if s >= 64)}, "
            "or fewer stages")
    augment = det["augment"]
    crop = training_window_px(augment["crop_px"] if augment["enabled"] else 0, size)
    if crop % strides[-1] and crop != size:
        out.append(f"detector.augment.crop_px = {crop} is not a multiple of the detector's coarsest stride "
                   f"{strides[-1]}: the training windows pass the same feature pyramid; use e.g. "
                   f"{crop - crop % strides[-1] or strides[-1]}, or 0 for whole images")
    groups = model["groups"]
    for key, width in [("stem_width", model["stem_width"])] + [(f"widths[{i}]", w) for i, w in enumerate(widths)]:
        if width % min(groups, width):
            out.append(f"detector.model.{key} = {width} is not divisible by detector.model.groups = "
                       f"{groups} (GroupNorm splits the channels into equal groups)")
    if model["block"] == "bottleneck":
        for i, width in enumerate(widths):
            inner = width // BOTTLENECK_EXPANSION
            if width % BOTTLENECK_EXPANSION or inner % min(groups, inner):
                out.append(
                    f"detector.model.widths[{i}] = {width}: a bottleneck block's inner width is "
                    f"width / {BOTTLENECK_EXPANSION}, which must be a whole number divisible by "
                    f"detector.model.groups = {groups}; use a multiple of "
                    f"{BOTTLENECK_EXPANSION * groups} (e.g. ResNet-50's 256, 512, 1024, 2048)")
    quantiles = det["anchors"].get("size_quantiles")
    if quantiles is not None and not quantiles[0] < quantiles[1]:
        out.append(f"detector.anchors.size_quantiles = {list(quantiles)}: need low < high")
    for stage in ("rpn", "roi"):
        cfg = det[stage]
        if cfg["bg_iou"] > cfg["fg_iou"]:
            out.append(f"detector.{stage}.bg_iou = {cfg['bg_iou']} is above detector.{stage}.fg_iou = "
                       f"{cfg['fg_iou']}: need bg_iou <= fg_iou")
    return out


def max_boxes_problems(config: Mapping[str, Any]) -> list[str]:
    """`detector.max_boxes` (ground-truth slots per training image) against the most characters
    on one training image of each pool the experiments use."""
    max_boxes = config["detector"]["max_boxes"]
    out = []
    for pool, n in max_characters_per_image(config).items():
        if n <= max_boxes:
            continue
        if pool == "synthetic":
            reason = f"synth.characters_per_image puts {n} characters on each synthetic image"
        elif config["data"]["source"] == "simulate":
            reason = f"a simulated billet ID has up to {n} characters"
        else:
            reason = f"data.coco.train ({config['data']['coco']['train']}) has an image with {n} annotations"
        out.append(f"detector.max_boxes = {max_boxes} is too small: {reason}; raise detector.max_boxes "
                   f"to at least {n}")
    return out


def glyph_problems(config: Mapping[str, Any]) -> list[str]:
    """With `data.source: coco` and synthesis on, every annotated category of the user's train
    file needs a glyph: refused here, before the GAN trains, not when synthesis starts."""
    requirement = glyph_requirement(config)
    if config["data"]["source"] != "coco" or not requirement["needed"]:
        return []
    names = normalised_category_names(annotated_category_names(config["data"]["coco"]["train"]), requirement)
    if names is None:
        return []
    # Imported here: the glyph module needs shapely and OpenCV, which a parse needs only for this.
    from billetjax.glyphs import require_glyphs

    try:
        require_glyphs(names, requirement["glyph_file"], where=f"data.coco.train ({config['data']['coco']['train']})")
    except ValueError as err:
        return [str(err)]
    return []


def data_problems(config: Mapping[str, Any]) -> list[str]:
    """The simulated pool's visibility mix."""
    out = []
    data = config["data"]
    if data["source"] == "simulate":
        sim = data["simulate"]
        total = sim["poor_fraction"] + sim["partial_fraction"]
        if total >= 1:
            out.append(f"data.simulate.poor_fraction + data.simulate.partial_fraction = {total:g} leaves "
                       "no well visible billets; keep the sum below 1 (paper: about 0.24)")
    return out


def gan_problems(config: Mapping[str, Any]) -> list[str]:
    """The GAN's input size against the stamp crops; its checkpoints."""
    out = []
    gan, stamps = config["gan"], config["data"]["stamps"]
    if gan["image_size_px"] != stamps["size_px"]:
        out.append(f"gan.image_size_px = {gan['image_size_px']} differs from data.stamps.size_px = "
                   f"{stamps['size_px']}: the GAN trains on the stamp crops; set both to the same size")
    if gan["checkpoint_every"] > gan["steps"]:
        out.append(f"gan.checkpoint_every = {gan['checkpoint_every']} is above gan.steps = {gan['steps']}: "
                   "the GAN would keep no checkpoint")
    return out


# [low, high] ranges of the synth section, drawn uniformly (or as integers) between the two.
SYNTH_RANGES = (
    "masks.erase_pieces", "masks.erase_radius", "partial.characters", "partial.visible_fraction",
    "embed.char_height_px", "embed.char_gap", "embed.row_gap", "embed.opacity",
    "embed.saturation_scale", "embed.value_scale", "embed.noise_std",
)


def synth_problems(config: Mapping[str, Any]) -> list[str]:
    """The synthesis: checkpoints it draws stamps from, ordered ranges, partial visibility."""
    out = []
    synth = config["synth"]
    if synth["method"] == "gan" or "gan" in synthetic_sources(config):
        available = gan_checkpoints(config)
        unknown = sorted(set(synth["checkpoints"]) - set(available))
        if unknown:
            out.append(f"synth.checkpoints {unknown} are not GAN checkpoints (gan.steps / "
                       f"gan.checkpoint_every give {available}); pick checkpoints from that list")
        twice = sorted(c for c, n in Counter(synth["checkpoints"]).items() if n > 1)
        if twice:
            out.append(f"synth.checkpoints lists {twice} more than once")
    for key in SYNTH_RANGES:
        section, name = key.split(".")
        low, high = synth[section][name]
        if low > high:
            out.append(f"synth.{key} = [{low}, {high}]: low above high")
    visible_high = synth["partial"]["visible_fraction"][1]
    min_area = synth["masks"]["min_area_fraction"]
    if visible_high >= min_area:
        out.append(f"synth.partial.visible_fraction high {visible_high} must stay below "
                   f"synth.masks.min_area_fraction {min_area}: else a partially visible stamp is no "
                   "different from a worn one")
    if not any(w > 0 for w in synth["partial"]["modes"].values()):
        out.append("synth.partial.modes: at least one of erased, edge, occluder needs a positive weight")
    return out


def experiment_row_problems(config: Mapping[str, Any]) -> list[str]:
    """Each row of `experiments.sets` says what it holds one way, and its axes fit together."""
    out = []
    for k, row in enumerate(config["experiments"]["sets"], 1):
        name = f"experiments.sets row {k}"
        counts = [key for key in ("real_images", "synthetic_images") if key in row]
        if counts and "synthetic_pct" in row:
            out.append(f"{name}: gives synthetic_pct and {' and '.join(counts)}; give the share or the counts")
            continue
        if not counts and "synthetic_pct" not in row:
            out.append(f"{name}: give synthetic_pct, or real_images and/or synthetic_images")
            continue
        if counts and row["images_fraction"] != 1.0:
            out.append(f"{name}: images_fraction scales synthetic_pct rows; a row with counts gives its sizes itself")
        if counts:
            n_real, n_synthetic = row.get("real_images", 0), row.get("synthetic_images", 0)
            if n_real + n_synthetic == 0:
                out.append(f"{name}: real_images + synthetic_images is 0")
                continue
        else:
            n_real = 1 if row["synthetic_pct"] < 100 else 0
            n_synthetic = 1 if row["synthetic_pct"] > 0 else 0
        mixed = n_real and n_synthetic
        if row["strategy"] == "sequential" and not mixed:
            out.append(f"{name}: strategy sequential needs real and synthetic images (a share strictly between 0 and 100)")
        if row["synthetic_schedule"] is not None:
            if not mixed:
                out.append(f"{name}: synthetic_schedule needs real and synthetic images to draw from")
            if row["strategy"] != "mix":
                out.append(f"{name}: synthetic_schedule is a way to mix; it cannot go with strategy {row['strategy']}")
        if row["oversample_hard"] and not n_real:
            out.append(f"{name}: oversample_hard repeats real images, and the row has none")
        if row["synthetic_source"] is not None and not n_synthetic:
            out.append(f"{name}: synthetic_source {row['synthetic_source']} on a row without synthetic images")
    return out


def experiment_problems(config: Mapping[str, Any]) -> list[str]:
    """Enough real (simulated) and synthetic images for the largest experiment; hard images to
    oversample."""
    from billetjax.experiments import table1

    out = []
    exps = table1(config["experiments"], config["synth"]["method"])
    need_real = max(e.n_real for e in exps)
    need_synthetic = max(e.n_synthetic for e in exps)
    simulated = config["data"]["simulate"]
    if (config["data"]["source"] == "simulate" and any(e.oversample_hard for e in exps)
            and simulated["poor_fraction"] + simulated["partial_fraction"] == 0):
        out.append("an experiment has oversample_hard, but data.simulate makes no poor or partial billets "
                   "(poor_fraction + partial_fraction = 0)")
    if config["data"]["source"] == "simulate":
        pool = config["data"]["simulate"]["train_pool_images"]
        if need_real > pool:
            out.append(f"data.simulate.train_pool_images = {pool} is below the {need_real} real images "
                       "the largest experiment needs (experiments.images x images_fraction x real "
                       "share); raise it or lower experiments.images")
    if need_synthetic > config["synth"]["images"]:
        out.append(f"synth.images = {config['synth']['images']} is below the {need_synthetic} synthetic "
                   "images the largest experiment needs (experiments.images x images_fraction x "
                   "synthetic_pct); raise it or lower experiments.images")
    return out


def evaluation_problems(config: Mapping[str, Any]) -> list[str]:
    """The gallery's experiment; the ID pattern's positions against its lengths."""
    out = []
    evaluation = config["evaluation"]
    n_sets = len(config["experiments"]["sets"])
    experiment = evaluation["gallery"]["experiment"]
    if not 1 <= experiment <= n_sets:
        out.append(f"evaluation.gallery.experiment = {experiment}, but experiments.sets has {n_sets} "
                   f"rows; pick 1..{n_sets}")
    pattern = evaluation["id_pattern"]
    if pattern is not None and "length" in pattern and pattern.get("positions"):
        length = pattern["length"]
        longest = max(length) if isinstance(length, list) else length
        if len(pattern["positions"]) > longest:
            out.append(f"evaluation.id_pattern.positions has {len(pattern['positions'])} entries but "
                       f"evaluation.id_pattern.length allows at most {longest} characters")
    # Letters in the simulated IDs (data.simulate.id_letters) need a pattern that allows them.
    out += id_pattern_problems(config)
    return out


def id_pattern_problems(config: Mapping[str, Any]) -> list[str]:
    """Problems of `evaluation.id_pattern` with the simulated IDs (`data.simulate.id_letters`,
    `IdScheme.pattern_problems`); none for `data.source: coco` (the user's IDs are theirs)."""
    if config["data"]["source"] != "simulate":
        return []
    from billetjax.data.billet_ids import IdScheme

    try:
        scheme = IdScheme.from_config(config["data"]["simulate"])
    except ValueError as err:
        return [str(err)]
    return scheme.pattern_problems(config["evaluation"]["id_pattern"])


def read_problems(config: Mapping[str, Any]) -> list[str]:
    """The frames to read (`read.images`) exist, and the detector that reads them is one the study
    trains (`read.experiment` a row of experiments.sets); a lexicon file exists."""
    read = config["read"]
    out = []
    n_sets = len(config["experiments"]["sets"])
    if not 1 <= read["experiment"] <= n_sets:
        out.append(f"read.experiment = {read['experiment']}, but experiments.sets has {n_sets} rows; pick 1..{n_sets}")
    seeds = list(config["experiments"]["seeds"])
    if read["images"] is not None and read["seed"] not in seeds:
        out.append(f"read.seed = {read['seed']} is not one of experiments.seeds {seeds}; pick the seed of a "
                   "detector the study trains")
    if read["images"] is not None and not Path(read["images"]).is_dir():
        out.append(f"read.images = {read['images']!r}: no such folder; fix: point it at the folder of frames to "
                   "read (or set it to null)")
    if read["lexicon"] is not None and not Path(read["lexicon"]).is_file():
        out.append(f"read.lexicon = {read['lexicon']!r}: no such file; fix: give the CSV of expected IDs, or null")
    return out


def problems_of_test_sets(config: Mapping[str, Any]) -> list[str]:
    """Test sets (`data.test_sets`, testset{n} = the n-th) have distinct names, and the gallery's
    and the primary endpoint's test sets are among them."""
    out = []
    sets = config["data"]["test_sets"]
    names = [s["name"] for s in sets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        out.append(f"data.test_sets: names {repeated} are used more than once; give each set its own name")
    for key in ("gallery", "primary"):
        chosen = config["evaluation"][key]["test_set"]
        if not 1 <= chosen <= len(sets):
            out.append(f"evaluation.{key}.test_set = {chosen}, but data.test_sets has {len(sets)} sets; "
                       f"pick 1..{len(sets)}")
    return out
