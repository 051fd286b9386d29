"""The detector's typed config (built once from the schema-validated section), its spec and the
weights file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from billetjax.detector.spec import (DetectorConfig, DetectorSpec, load_params, make_spec,
                                     save_params)


def test_defaults_the_old_code_disagreed_on(make_config):
    """The values that train.py's and the dataclasses' own defaults used to contradict."""
    cfg = DetectorConfig.from_config(make_config()["detector"])
    assert cfg.roi.positive_fraction == 0.5 and cfg.model.stem == "space_to_depth"
    assert cfg.model.anchor_levels == 1 and cfg.checkpoint_every == 100


def test_missing_key_is_refused_with_its_name(make_config):
    section = make_config()["detector"]
    del section["roi"]["positive_fraction"]
    with pytest.raises(ValueError, match=r"detector\.roi lacks positive_fraction"):
        DetectorConfig.from_config(section)
    with pytest.raises(ValueError, match="detector lacks steps"):
        DetectorConfig.from_config({k: v for k, v in make_config()["detector"].items() if k != "steps"})


def test_config_is_frozen_and_round_trips(make_config):
    cfg = DetectorConfig.from_config(make_config({"detector": {"augment": {"enabled": False}}})["detector"])
    assert cfg.augment is None and cfg.to_config()["augment"] == {"enabled": False}
    assert DetectorConfig.from_config(cfg.to_config()) == cfg
    on = DetectorConfig.from_config(make_config()["detector"])
    assert on.augment.min_visible == 0.5 and on.anchors.size_quantiles == (0.02, 0.98)  # the schema's
    assert DetectorConfig.from_config(on.to_config()) == on
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 1


def test_spec_takes_the_configs_stages_and_sizes_anchors_from_the_boxes(make_config, tmp_path):
    import jax.numpy as jnp

    cfg = DetectorConfig.from_config(
        make_config({"detector": {"model": {"widths": [8, 16], "blocks": [1, 1], "stem_width": 8,
                                            "anchor_levels": 5}}})["detector"])
    rng = np.random.default_rng(0)
    h = rng.uniform(15, 40, 200)
    boxes = np.stack([rng.uniform(0, 50, 200), rng.uniform(0, 50, 200), h / 1.7, h], 1)
    spec, summary = make_spec(cfg, 64, (3, 5, 9), boxes)
    assert spec.rpn == cfg.rpn and spec.roi == cfg.roi and spec.inference == cfg.inference
    assert spec.model.num_classes == 3 and spec.model.anchor_levels == 2  # at most the stages
    assert spec.model.anchors_per_location == cfg.anchors.sizes_per_level * cfg.anchors.aspect_ratios
    assert len(spec.anchor_sizes) == 2 and "aspect ratios" in summary
    with pytest.raises(ValueError, match="multiple of the coarsest stride 8"):
        make_spec(cfg, 60, (3, 5, 9), boxes)

    params = {"layer": {"kernel": jnp.arange(6.0).reshape(2, 3)}}
    save_params(tmp_path / "params.msgpack", spec, params)
    loaded_spec, loaded = load_params(tmp_path / "params.msgpack")
    assert loaded_spec == spec and isinstance(loaded_spec, DetectorSpec)
    np.testing.assert_array_equal(loaded["layer"]["kernel"], np.arange(6.0).reshape(2, 3))
