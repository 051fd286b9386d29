"""The config check at parse time: a closed schema, no NaN / inf, and the rules across keys
(billetjax.config), each on hand-built configs, and a few through `snakemake -n` as users meet them."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from billetjax import config as cfg

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas/config.schema.yaml"
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def merged(base: dict, extra: dict) -> dict:
    """`extra` laid over `base` key by key, as Snakemake merges --configfile over the configfile."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def config_with(**sections) -> dict:
    """config.yaml with `sections` laid over it, schema-validated with its defaults filled in."""
    config = merged(DEFAULT, sections)
    validate(config, str(SCHEMA))
    return config


def refused(config: dict) -> str:
    """The ConfigError message for a config check_config must refuse."""
    with pytest.raises(cfg.ConfigError) as err:
        cfg.check_config(config)
    return str(err.value)


# ----------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("preset", [None, "presets/paper.yaml", "tests/presets/smoke.yaml"])
def test_shipped_configs_pass(preset):
    extra = yaml.safe_load((ROOT / preset).read_text()) if preset else {}
    config = config_with(**extra)
    assert cfg.problems(config) == []


def test_config_error_is_a_value_error_and_lists_every_problem():
    config = config_with(image_size_px=100, gan={"image_size_px": 32})
    err = pytest.raises(cfg.ConfigError, cfg.check_config, config).value
    assert isinstance(err, ValueError) and len(err.problems) == 2
    assert "2 problems" in str(err) and "image_size_px = 100" in str(err) and "gan.image_size_px" in str(err)


# ----------------------------------------------------------------------------- schema: closed


def _open_objects(node, path=""):
    """Objects that take any key: no `additionalProperties`, or true (a schema there is a map
    whose values it checks, which is closed enough)."""
    if isinstance(node, dict):
        if (node.get("type") == "object" or "properties" in node) and node.get("additionalProperties", True) is True:
            yield path or "/"
        for key, value in node.items():
            yield from _open_objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _open_objects(value, f"{path}[{i}]")


def test_every_schema_object_is_closed():
    assert list(_open_objects(yaml.safe_load(SCHEMA.read_text()))) == []


@pytest.mark.parametrize("section", [
    {"detector": {"typo_key": 1}},
    {"detector": {"augment": {"brightnes": 0.1}}},
    {"detector": {"model": {"width": [8]}}},
])
def test_schema_refuses_unknown_detector_keys(section):
    with pytest.raises(WorkflowError, match="typo_key|brightnes|width"):
        config_with(**section)


# ----------------------------------------------------------------------------- NaN and inf


def test_schema_alone_lets_nan_through():
    # why check_config walks the config: minimum/exclusiveMinimum never fail on NaN
    config_with(gan={"learning_rate": float("nan")})


@pytest.mark.parametrize("sections, path", [
    ({"gan": {"learning_rate": float("nan")}}, "gan.learning_rate"),
    ({"detector": {"weight_decay": float("inf")}}, "detector.weight_decay"),
    ({"synth": {"embed": {"char_gap": [0.1, float("inf")]}}}, "synth.embed.char_gap[1]"),
    ({"experiments": {"sets": [{"synthetic_pct": float("nan")}]}}, "experiments.sets[0].synthetic_pct"),
])
def test_non_finite_numbers_are_refused_with_their_key(sections, path):
    config = merged(DEFAULT, sections)
    validate(config, str(SCHEMA))  # passes the schema ...
    assert f"{path} = " in refused(config)  # ... not the check


def test_non_finite_lists_every_path():
    found = dict(cfg.non_finite({"a": {"b": [1.0, float("-inf")], "c": float("nan")}, "d": 2}))
    assert set(found) == {"a.b[1]", "a.c"} and math.isinf(found["a.b[1]"])


# ----------------------------------------------------------------------------- detector geometry


def _model_config(**fields):
    """A detector architecture (no defaults in ModelConfig): a small one with `fields` replaced."""
    from billetjax.detector.spec import ModelConfig

    small = dict(num_classes=10, stem_width=8, widths=(8, 8, 8), blocks=(1, 1, 1), fpn_width=8,
                 head_width=8, anchors_per_location=1, anchor_levels=1, pool_size=7, groups=8,
                 stem="conv", block="basic", precision="float32")
    return ModelConfig(**{**small, **fields})


def test_backbone_strides_are_the_models():
    for n in (1, 2, 3, 4):
        widths = tuple(8 * 2**i for i in range(n))
        assert cfg.backbone_strides(n) == _model_config(widths=widths, blocks=(1,) * n).strides


@pytest.mark.parametrize("stem", ["conv", "space_to_depth"])
def test_coarsest_stride_is_the_backbones(stem):
    import jax.numpy as jnp
    from flax import nnx

    from billetjax.detector.backbone import Backbone

    model = _model_config(groups=4, stem=stem)
    features = Backbone(model, nnx.Rngs(0))(jnp.zeros((1, 64, 64, 3)))
    config = config_with(detector={"model": {"widths": [8, 8, 8]}})
    assert features[-1].shape[1] * cfg.backbone_strides(len(config["detector"]["model"]["widths"]))[-1] == 64


def test_image_size_must_be_a_multiple_of_the_coarsest_stride():
    message = refused(config_with(image_size_px=100))
    assert "image_size_px = 100" in message and "stride 16" in message and "96 or 112" in message
    assert cfg.problems(config_with(image_size_px=112)) == []
    # two stages: stride 8, so 104 works
    two = {"model": {"widths": [32, 64], "blocks": [1, 1]}}
    assert cfg.problems(config_with(image_size_px=104, detector=two)) == []
    assert "stride 16" in refused(config_with(image_size_px=104))


def test_blocks_per_stage_must_match_the_widths():
    message = refused(config_with(detector={"model": {"blocks": [1, 1]}}))
    assert "detector.model.blocks" in message and "detector.model.widths" in message


def test_widths_must_divide_into_the_groupnorm_groups():
    message = refused(config_with(detector={"model": {"stem_width": 12}}))
    assert "detector.model.stem_width = 12" in message and "groups" in message
    # a width below the group count is one channel per group (min(groups, width)): fine
    assert cfg.problems(config_with(detector={"model": {"stem_width": 4, "widths": [4, 16, 32]}})) == []


def test_bottleneck_widths_must_divide_by_four_and_then_by_the_groups():
    # default widths 32, 64, 128 with 8 groups: inner widths 8, 16, 32 are fine
    assert cfg.problems(config_with(detector={"model": {"block": "bottleneck"}})) == []
    message = refused(config_with(detector={"model": {"block": "bottleneck", "widths": [32, 66, 96]}}))
    assert "detector.model.widths[1] = 66" in message and "width / 4" in message
    assert "widths[0]" not in message and "widths[2]" not in message
    # 96 / 4 = 24 is not divisible by 16 groups (basic blocks would be: 96 / 16 = 6)
    message = refused(config_with(detector={"model": {"block": "bottleneck", "groups": 16,
                                                      "stem_width": 16, "widths": [64, 96, 128]}}))
    assert "widths[1] = 96" in message and "multiple of 64" in message
    assert cfg.problems(config_with(detector={"model": {"groups": 16, "stem_width": 16,
                                                        "widths": [64, 96, 128]}})) == []
    from billetjax.config import BOTTLENECK_EXPANSION

    assert cfg.BOTTLENECK_EXPANSION == BOTTLENECK_EXPANSION  # the parse-time copy of the model's


def test_anchor_quantiles_and_iou_thresholds_must_be_ordered():
    assert "detector.anchors.size_quantiles" in refused(config_with(detector={"anchors": {"size_quantiles": [0.9, 0.1]}}))
    assert cfg.problems(config_with(detector={"anchors": {"size_quantiles": [0.05, 0.95]}})) == []
    message = refused(config_with(detector={"rpn": {"bg_iou": 0.8}}))
    assert "detector.rpn.bg_iou = 0.8" in message and "detector.rpn.fg_iou = 0.7" in message


# ----------------------------------------------------------------------------- max_boxes


def test_simulator_exposes_its_longest_id():
    from billetjax.data.billet_ids import MAX_ID_CHARACTERS, random_billet_id

    rng = np.random.default_rng(1)
    assert max(len(random_billet_id(rng)) for _ in range(400)) == MAX_ID_CHARACTERS == 12


def test_max_boxes_must_hold_the_longest_simulated_id():
    message = refused(config_with(detector={"max_boxes": 11}))
    assert "detector.max_boxes = 11" in message and "12 characters" in message
    assert cfg.problems(config_with(detector={"max_boxes": 12})) == []


def test_max_boxes_must_hold_the_synthetic_characters():
    message = refused(config_with(synth={"characters_per_image": 20}))
    assert "detector.max_boxes = 16" in message and "synth.characters_per_image" in message
    # no experiment mixes synthetic images in: the synthetic pool's count does not matter
    real_only = {"sets": [{"synthetic_pct": 0}, {"synthetic_pct": 0, "images_fraction": 0.5}]}
    assert cfg.problems(config_with(synth={"characters_per_image": 20}, experiments=real_only)) == []


def test_all_synthetic_study_does_not_need_room_for_real_ids():
    synthetic_only = {"sets": [{"synthetic_pct": 100}]}
    config = config_with(detector={"max_boxes": 10}, experiments=synthetic_only)
    assert cfg.max_characters_per_image(config) == {"synthetic": 10}
    assert cfg.problems(config) == []


def _coco(path: Path, per_image: list[int]) -> Path:
    images = [{"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64} for i in range(len(per_image))]
    annotations = [{"id": 100 * (i + 1) + j, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 5, 8]}
                   for i, n in enumerate(per_image) for j in range(n)]
    annotations.append({"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 8]})  # not counted
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": []}))
    return path


def _coco_config(train: Path | str, tmp_path: Path, **detector) -> dict:
    data = {"source": "coco", "coco": {"train": str(train), "train_images": str(tmp_path),
                                       "test": str(tmp_path / "test.json"), "test_images": str(tmp_path)}}
    return config_with(data=data, detector=detector)


def test_training_windows_must_fit_the_feature_pyramid():
    """`detector.augment.crop_px` off the coarsest stride is refused before any job; a window as
    large as the image, or augmentation off, is whole images and passes."""
    message = refused(config_with(detector={"augment": {"crop_px": 150}}))
    assert "detector.augment.crop_px = 150 is not a multiple of the detector's coarsest stride 16" in message
    assert "use e.g. 144" in message
    assert cfg.problems(config_with(detector={"augment": {"crop_px": 144}})) == []
    assert cfg.problems(config_with(detector={"augment": {"crop_px": 300}})) == []
    assert cfg.problems(config_with(detector={"augment": {"enabled": False, "crop_px": 150}})) == []


def test_max_boxes_must_hold_the_users_busiest_training_image(tmp_path):
    train = _coco(tmp_path / "train.json", [3, 16, 2])
    assert cfg.most_annotations_per_image(str(train)) == 16
    assert cfg.problems(_coco_config(train, tmp_path)) == []
    train = _coco(tmp_path / "train.json", [3, 17, 2])
    message = refused(_coco_config(train, tmp_path))
    assert "detector.max_boxes = 16" in message and str(train) in message and "17 annotations" in message
    assert cfg.problems(_coco_config(train, tmp_path, max_boxes=17)) == []


@pytest.mark.parametrize("content", [None, "{not json", '{"annotations": [{"image_id": 1}]}', "[1, 2]"])
def test_a_missing_or_broken_coco_file_is_left_to_the_import_job(tmp_path, content):
    train = tmp_path / "train.json"
    if content is not None:
        train.write_text(content)
    assert cfg.most_annotations_per_image(str(train)) is None
    assert cfg.problems(_coco_config(train, tmp_path)) == []


# ----------------------------------------------------------------------------- other stages


def test_gan_size_must_be_the_stamp_size():
    message = refused(config_with(gan={"image_size_px": 32}))
    assert "gan.image_size_px = 32" in message and "data.stamps.size_px = 64" in message


def test_gan_must_keep_a_checkpoint():
    config = config_with(gan={"steps": 500}, synth={"method": "classic"})
    assert "gan.checkpoint_every = 1000" in refused(config)


def test_synth_checkpoints_must_be_gan_checkpoints():
    message = refused(config_with(synth={"checkpoints": [1000, 1500]}))
    assert "synth.checkpoints [1500]" in message and "[1000, 2000, 3000]" in message
    assert "more than once" in refused(config_with(synth={"checkpoints": [1000, 1000]}))
    # the classic renderer draws from no checkpoint
    assert cfg.problems(config_with(synth={"method": "classic", "checkpoints": [1500]})) == []


def test_simulated_pool_needs_well_visible_billets():
    from billetjax.data.pools import plan_train_pool

    sim = {"poor_fraction": 0.5, "partial_fraction": 0.5}
    assert "data.simulate.poor_fraction + data.simulate.partial_fraction = 1" in refused(config_with(data={"simulate": sim}))
    with pytest.raises(ValueError):  # the stage's own check agrees
        plan_train_pool(10, 0.3, 0.5, 0.5, 0)


@pytest.mark.parametrize("key", cfg.SYNTH_RANGES)
def test_synth_ranges_must_be_ordered(key):
    section, name = key.split(".")
    low, high = config_with()["synth"][section][name]
    assert low < high  # the defaults, reversed below
    message = refused(config_with(synth={section: {name: [high, low]}}))
    assert f"synth.{key} = [{high}, {low}]: low above high" in message


def test_partial_visibility_must_stay_below_the_worn_stamps_area():
    from billetjax.synth.masks import MaskParams

    config = config_with(synth={"partial": {"visible_fraction": [0.35, 0.9]}})
    assert "synth.masks.min_area_fraction" in refused(config)
    with pytest.raises(ValueError):  # the stage's own check agrees
        MaskParams.from_config(config["synth"])


def test_partial_modes_need_a_positive_weight():
    modes = {"erased": 0.0, "edge": 0.0, "occluder": 0.0}
    assert "synth.partial.modes" in refused(config_with(synth={"partial": {"modes": modes}}))


def test_pools_must_hold_the_largest_experiment():
    message = refused(config_with(data={"simulate": {"train_pool_images": 399}}))
    assert "data.simulate.train_pool_images = 399" in message and "400 real images" in message
    message = refused(config_with(synth={"images": 399}))
    assert "synth.images = 399" in message and "400 synthetic images" in message
    # a real pool only as large as the largest real share (75 % of 400 at 25 % synthetic)
    sets = {"sets": [{"synthetic_pct": 25}, {"synthetic_pct": 100}]}
    assert cfg.problems(config_with(data={"simulate": {"train_pool_images": 300}}, experiments=sets)) == []


def test_gallery_experiment_must_be_a_row_of_the_study():
    rows = len(DEFAULT["experiments"]["sets"])
    message = refused(config_with(evaluation={"gallery": {"experiment": rows + 1}}))
    assert f"evaluation.gallery.experiment = {rows + 1}" in message and f"{rows} rows" in message


def test_id_pattern_positions_must_fit_its_length():
    pattern = {"length": 3, "positions": ["1", "2", "3", "4"]}
    assert "evaluation.id_pattern.positions" in refused(config_with(evaluation={"id_pattern": pattern}))


# ----------------------------------------------------------------------------- through Snakemake

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--directory", str(ROOT), "--snakefile", str(ROOT / "Snakefile")]


def dry_run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "-n", "--quiet", "rules", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def _refused_by_snakemake(result: subprocess.CompletedProcess, *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    for text in expected:
        assert text in output, output[-2000:]


def test_snakemake_refuses_a_typo_under_detector():
    _refused_by_snakemake(dry_run("--config", "detector={typo_key: 1}"), "typo_key", "detector")


def test_snakemake_refuses_nan(tmp_path):
    extra = tmp_path / "nan.yaml"
    extra.write_text("gan:\n  learning_rate: .nan\n")
    _refused_by_snakemake(dry_run("--configfile", str(extra)), "gan.learning_rate = nan")


def test_snakemake_refuses_an_image_size_off_the_stride():
    _refused_by_snakemake(dry_run("--config", "image_size_px=100"), "image_size_px = 100", "coarsest stride 16")


def test_snakemake_refuses_too_few_box_slots(tmp_path):
    extra = tmp_path / "boxes.yaml"
    extra.write_text("detector:\n  max_boxes: 8\n")
    _refused_by_snakemake(dry_run("--configfile", str(extra)), "detector.max_boxes = 8", "at least 12")


def test_test_set_names_are_distinct_and_the_gallery_names_one_of_them():
    message = refused(config_with(data={"test_sets": [{"name": "all"}, {"name": "all", "where": {"site": "A"}}]}))
    assert "data.test_sets: names ['all'] are used more than once" in message
    message = refused(config_with(data={"test_sets": [{"name": "all"}]}, evaluation={"gallery": {"test_set": 3}}))
    assert "evaluation.gallery.test_set = 3, but data.test_sets has 1 sets" in message
    cfg.check_config(config_with(data={"test_sets": [{"name": "all"}]}, evaluation={"gallery": {"test_set": 1}}))


def test_categories_without_glyphs_are_refused_at_parse_time_when_synthesis_is_on(tmp_path):
    export = {"images": [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8} for i in range(1, 5)],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [1, 1, 2, 2]},
                              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [4, 1, 2, 2]}],
              "categories": [{"id": 0, "name": "7"}, {"id": 1, "name": "§"}, {"id": 2, "name": "plant"}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(export))
    coco = {"source": "coco", "coco": {"train": str(path)}}
    message = refused(config_with(data=coco))
    assert "'§'" in message and "plant" not in message  # a category without annotations needs none
    # (four images: the experiments draw no more real images than the export has)
    cfg.check_config(config_with(data=coco, experiments={"sets": [{"synthetic_pct": 0}], "images": 4}))


# ----------------------------------------------------------------------------- experiment axes


@pytest.mark.parametrize("row, message", [
    ({"synthetic_pct": 50, "real_images": 10}, "gives synthetic_pct and real_images"),
    ({"strategy": "mix"}, "give synthetic_pct, or real_images"),
    ({"real_images": 0, "synthetic_images": 0}, "real_images + synthetic_images is 0"),
    ({"real_images": 10, "images_fraction": 0.5}, "images_fraction scales synthetic_pct rows"),
    ({"synthetic_pct": 0, "strategy": "sequential"}, "strategy sequential needs real and synthetic"),
    ({"synthetic_pct": 100, "synthetic_schedule": [80, 20]}, "synthetic_schedule needs real and synthetic"),
    ({"synthetic_pct": 50, "strategy": "sequential", "synthetic_schedule": [80, 20]}, "synthetic_schedule is a way to mix; it cannot go with strategy sequential"),
    ({"synthetic_pct": 100, "oversample_hard": True}, "oversample_hard repeats real images"),
    ({"synthetic_pct": 0, "synthetic_source": "classic"}, "synthetic_source classic on a row without synthetic"),
])
def test_experiment_rows_that_do_not_fit_together_are_refused(row, message):
    config = config_with(experiments={"sets": [{"synthetic_pct": 0}, row]})
    assert f"experiments.sets row 2: {message}" in refused(config)


def test_oversampling_needs_hard_simulated_billets():
    config = config_with(experiments={"sets": [{"synthetic_pct": 0, "oversample_hard": True}]},
                         data={"simulate": {"poor_fraction": 0.0, "partial_fraction": 0.0}})
    assert "makes no poor or partial billets" in refused(config)


def test_counts_need_big_enough_pools():
    config = config_with(experiments={"sets": [{"real_images": 600}, {"real_images": 10, "synthetic_images": 500}]})
    message = refused(config)
    assert "below the 600 real images" in message and "below the 500 synthetic images" in message


def test_questions_preset_passes_and_plans_its_rows(job_counts):
    extra = yaml.safe_load((ROOT / "presets/questions.yaml").read_text())
    config = config_with(**extra)
    assert cfg.problems(config) == []
    assert cfg.synthetic_sources(config) == ["classic", "gan"]
    result = dry_run("--configfile", str(ROOT / "presets/questions.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["detector_train"] == len(config["experiments"]["sets"]) * len(config["experiments"]["seeds"])
    seeds = len(config["experiments"]["seeds"])
    assert counts["synth_pool"] == 2 * seeds  # the GAN's and the classic renderer's pools, one fit per seed


# ----------------------------------------------------------------------------- one owner per default


def _leaves(values, path=""):
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from _leaves(value, f"{path}.{key}" if path else key)
    else:
        yield path, values


def _schema_default(path: str):
    """The schema's default at a dotted key path (KeyError where it gives none)."""
    node = yaml.safe_load(SCHEMA.read_text())
    for key in path.split("."):
        node = node["properties"][key]
    return node["default"]


def _restated(values: dict) -> list[str]:
    """The key paths where `values` sets exactly the schema's default."""
    out = []
    for path, value in _leaves(values):
        try:
            default = _schema_default(path)
        except KeyError:
            continue
        if default == value:
            out.append(path)
    return out


def test_config_yaml_restates_no_schema_default():
    """The schema owns every default: a key config.yaml sets must differ from the schema's
    default (the study's own choice) or have none. Editing a default in one place then cannot
    leave a stale copy in the other."""
    restated = _restated(DEFAULT)
    assert not restated, f"config.yaml restates the schema's defaults of {restated}: delete them there"


def test_a_restated_default_is_caught():
    """The check above is not vacuous: a config.yaml that copies a default fails it, one that
    departs from it does not."""
    steps = _schema_default("detector.steps")
    assert _restated({**DEFAULT, "detector": {"steps": steps}}) == ["detector.steps"]
    assert _restated({**DEFAULT, "detector": {"steps": steps + 1}}) == []


def test_every_key_is_documented_in_the_schema():
    """Each key of the schema says what it means: docs/configuration.md is written from it."""
    from billetjax.config_reference import leaves

    undocumented = [path for path, node in leaves(yaml.safe_load(SCHEMA.read_text())) if not node.get("description")]
    assert not undocumented, f"schema keys without a description: {undocumented}"


def test_configuration_page_is_written_from_the_schema():
    """docs/configuration.md is the schema's current rendering (regenerate it with
    `python -m billetjax.config_reference` after editing the schema or config.yaml)."""
    from billetjax.config_reference import PAGE, current_page

    assert PAGE.read_text() == current_page()


def test_load_config_lays_overlays_over_config_yaml_and_fills_defaults(tmp_path):
    """The one loader: config.yaml, then each overlay (a file as --configfile, a mapping as
    --config), then the schema's defaults; a bad overlay is refused by the config check."""
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("detector: {steps: 7}\nexperiments: {seeds: [4]}\n")
    config = cfg.load_config(overlay, {"gan": {"ngf": 16}})
    assert config["detector"]["steps"] == 7 and config["experiments"]["seeds"] == [4]
    assert config["gan"]["ngf"] == 16 and config["gan"]["ndf"] == _schema_default("gan.ndf")
    assert [row["images_fraction"] for row in config["experiments"]["sets"]] == [
        row.get("images_fraction", 1.0) for row in DEFAULT["experiments"]["sets"]]
    with pytest.raises(cfg.ConfigError, match="image_size_px = 250"):
        cfg.load_config({"image_size_px": 250})


def test_id_pattern_problems_reads_the_config():
    config = {"data": {"source": "simulate", "simulate": {"id_letters": "AB", "id_letter_positions": [0]}},
              "evaluation": {"id_pattern": {"length": [11, 12], "positions": ["123456789"]}}}
    assert len(cfg.id_pattern_problems(config)) == 1
    config["evaluation"]["id_pattern"]["positions"] = ["AB"]
    assert cfg.id_pattern_problems(config) == []
    config["data"]["source"] = "coco"
    config["evaluation"]["id_pattern"]["positions"] = ["123456789"]
    assert cfg.id_pattern_problems(config) == []
