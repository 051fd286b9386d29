# Helpers shared by every stage: config validation, wildcard constraints, path builders.

import os
from pathlib import Path

from snakemake.utils import validate

from billetjax import config as config_rules
from billetjax.experiments import table1
from billetjax.runtime import jax_gpu_installed
from billetjax.seeds import fit_root_seed as fit_root_seed_of

validate(config, "../schemas/config.schema.yaml")
# What the schema cannot say (NaN / inf, rules across keys): refused here, before any job.
config_rules.check_config(config)

workflow_root = Path(workflow.basedir)
# envs/*.yaml pip-install billetjax from here: Snakemake copies an env file into .snakemake/conda/,
# so a path relative to envs/ would not resolve.
os.environ.update(BILLETJAX_ROOT=str(workflow_root))

# Every stage appends the final artefacts it makes; `rule all` asks for them.
FINAL_TARGETS = []

# testset{n}: the n-th entry of data.test_sets (Table 2's five by default).
TEST_SETS = list(range(1, len(config["data"]["test_sets"]) + 1))
# Table 1: experiment k is row k of experiments.sets (billetjax.experiments.table1).
TABLE1 = table1(config["experiments"], config["synth"]["method"])
EXPERIMENTS = [e.number for e in TABLE1]
SEEDS = list(config["experiments"]["seeds"])
# The JAX rules' `gpu` resource: 1 where JAX runs on a GPU (a CUDA or ROCm plugin of JAX is
# installed, or BILLETJAX_GPUS=1), so that `--resources gpu=1` gives it to one job at a time;
# 0 on a CPU-only machine, where the detector's trainings and predictions (one thread each) run
# side by side on the cores. profiles/slurm sets gpu for the cluster's jobs itself.
JAX_GPUS = int(jax_gpu_installed())
# The chain stamp pairs -> GAN -> GAN stamps -> synthetic pool is the study's critical path: every
# synthetic row's trainings wait for it, while the real rows' trainings can run any time. Its rules
# outrank the rest (Snakemake's default priority is 0), so the GAN starts as soon as its stamp
# pairs exist instead of after the first real trainings (on the 2-core VM it started 7 min late).
CRITICAL_PATH_PRIORITY = 10


wildcard_constraints:
    experiment=r"\d+",
    seed=r"\d+",
    testset=r"\d+",
    ckpt=r"\d+",
    fit=r"\d+",
    method=r"gan|classic",


def gan_checkpoints():
    """Steps at which the GAN keeps a checkpoint (each one a {ckpt})."""
    return config_rules.gan_checkpoints(config)


def config_for(*sections):
    """The root seed and image size plus the named config sections: what a rule's params carry.

    Passing only these (not the whole config) keeps Snakemake's params-change detection honest:
    editing the detector's settings does not rerun the data stage.
    """
    subset = {"seed": config["seed"], "image_size_px": config["image_size_px"]}
    subset.update({name: config[name] for name in sections})
    return subset


def user_data_inputs(wildcards):
    """The user's COCO files and lexicon when data.source is coco (so edits to them rerun the import)."""
    if config["data"]["source"] != "coco":
        return []
    user = config["data"]["coco"]
    return [p for p in (user["train"], user["test"], user["lexicon"]) if p]


# The renderers whose pools some experiment mixes in (a row's synthetic_source, else synth.method).
SYNTHETIC_SOURCES = config_rules.synthetic_sources(config)
# Synthesis fits ({fit}): with synth.per_seed, one GAN fit and one synthetic pool per detector seed,
# paired (seed s trains on fit s), so that the seeds' spread includes the GAN's and the pool's; else
# one fit (the first seed's) for every seed. Each fit is the same pipeline under its own root seed.
FITS = SEEDS if config["synth"]["per_seed"] else SEEDS[:1]
FIRST_FIT = FITS[0]


def fit_of(seed):
    """The synthesis fit whose pool the detectors of `seed` train on."""
    return int(seed) if config["synth"]["per_seed"] else FIRST_FIT


def fit_root_seed(fit):
    """The root seed of a synthesis fit's GAN, stamps and pool (billetjax.seeds.fit_root_seed)."""
    return fit_root_seed_of(config["seed"], int(fit), config["synth"]["per_seed"])


def fit_config(wildcards, *sections):
    """config_for(*sections) with the fit's root seed: what the synthesis rules' params carry."""
    return {**config_for(*sections), "seed": fit_root_seed(wildcards.fit)}


def synthetic_pool(source=None, fit=None):
    """The synthetic pool of a renderer (gan or classic) and fit (default: the first). Default
    renderer: the study's (synth.method), or the one its rows use when they all name the other."""
    if source is None:
        method = config["synth"]["method"]
        source = method if method in SYNTHETIC_SOURCES or not SYNTHETIC_SOURCES else SYNTHETIC_SOURCES[0]
    return f"results/synth/{source}/fit{FIRST_FIT if fit is None else fit}/pool.json"


def experiment_row(wildcards):
    """Row {experiment} of Table 1 as a plain dict (a rule param; Experiment.from_dict reads it)."""
    return TABLE1[int(wildcards.experiment) - 1].to_dict()


def synthetic_pool_for(wildcards):
    """An experiment's synthetic pool (of its source, from its seed's fit), or nothing when it
    uses none (the real-only rows)."""
    row = TABLE1[int(wildcards.experiment) - 1]
    return [synthetic_pool(row.source, fit_of(wildcards.seed))] if row.uses_synthetic else []


# Evaluation stage: which run the detections gallery shows (evaluation.gallery, first seed).
def gallery_run():
    """{experiment, seed, test_set} of the detections gallery (check_config vetted them)."""
    gallery = config["evaluation"]["gallery"]
    return {"experiment": gallery["experiment"], "seed": SEEDS[0], "test_set": gallery["test_set"]}


# --- synth stage (rules/synth.smk) ---


def synth_stamp_banks(wildcards):
    """The stamp banks a fit's synthetic pool embeds: one per GAN checkpoint, or the classic bank."""
    if wildcards.method == "classic":
        return [f"results/synth/classic/fit{wildcards.fit}/stamps_classic.npz"]
    return expand("results/synth/gan/fit{fit}/stamps_step{ckpt}.npz", fit=wildcards.fit,
                  ckpt=config["synth"]["checkpoints"])


def synth_stamp_geometry():
    """Size and framing of a stamp crop: the GAN's input size and the stamp pairs' margin."""
    return {"size_px": config["gan"]["image_size_px"], "margin": config["data"]["stamps"]["margin"]}


def synth_glyph_inputs(wildcards):
    """The plant's own glyph file (synth.glyphs) when set, so that editing it remakes the stamps."""
    return [config["synth"]["glyphs"]] if config["synth"]["glyphs"] else []


# --- read stage (rules/read.smk) ---

# The reader's files (billetjax.read.reader) and what reading a folder writes (billetjax.read.outputs);
# plain lists here so that the Snakemake process does not import JAX.
READER_FILES = ["reader.json", "inference.stablehlo", "weights.npz"]
READ_OUTPUTS = ["reads.csv", "detections.json", "labelstudio_tasks.json", "cvat_coco.json",
                "to_label_first.csv", "least_certain.png"]


def reader_config():
    """What an exported reader records of the config: the frames' preprocessing (data.coco) and
    the reading's thresholds and ID grammar (evaluation), and nothing else, so that editing
    another key does not export and read again."""
    evaluation = config["evaluation"]
    return {"image_size_px": config["image_size_px"], "data": {"coco": config["data"]["coco"]},
            "evaluation": {key: evaluation[key] for key in ("score_threshold", "id_pattern", "id_reading")}}


def read_images(wildcards):
    """The folder of frames to read (read.images); refused by name when it is not set."""
    if not config["read"]["images"]:
        raise ValueError("results/read/ needs frames to read: read.images is not set; fix: set read.images to "
                         "the folder of frames in your config file (read: {images: path/to/frames})")
    return config["read"]["images"]


def read_lexicon(wildcards):
    """The lexicon of expected IDs, where one is given (read.lexicon)."""
    return [config["read"]["lexicon"]] if config["read"]["lexicon"] else []


def read_reader_files(wildcards):
    """The exported reader of the detector that reads (read.experiment, read.seed)."""
    read = config["read"]
    return expand("results/detector/exp{experiment}/seed{seed}/reader/{name}", experiment=read["experiment"],
                  seed=read["seed"], name=READER_FILES)
