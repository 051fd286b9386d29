"""Detector modules and the static-shape logic around them (proposals, detection, input pipeline)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from billetjax.detector import data as det_data
from billetjax.detector.backbone import space_to_depth, upsample2x
from billetjax.detector.models import FasterRCNN
from billetjax.detector.roi_heads import detect
from billetjax.detector.rpn import proposals as rpn_proposals
from billetjax.detector.spec import DetectorConfig, DetectorSpec, ModelConfig

SMALL = ModelConfig(num_classes=10, stem_width=8, widths=(8, 16, 16), blocks=(1, 1, 1), fpn_width=16,
                    head_width=32, anchors_per_location=3, anchor_levels=3, pool_size=7, groups=8,
                    stem="conv", block="basic", precision="float32")


@pytest.fixture
def detector_cfg(make_config) -> DetectorConfig:
    """config.yaml's `detector` section, validated with the schema's defaults."""
    return DetectorConfig.from_config(make_config()["detector"])


@pytest.fixture
def spec(detector_cfg) -> DetectorSpec:
    """A small 64 px detector with three anchor levels and the config's stage settings."""
    return DetectorSpec(model=SMALL, image_size_px=64, category_ids=tuple(range(1, 11)),
                        anchor_sizes=((12.0,), (18.0,), (24.0,)), aspect_ratios=(1.5, 1.7, 2.0),
                        rpn=detector_cfg.rpn, roi=detector_cfg.roi, inference=detector_cfg.inference)


def test_upsample_is_nearest_neighbour():
    x = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(upsample2x(x), jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


def test_space_to_depth_keeps_each_pixel_in_its_tile():
    x = np.zeros((1, 16, 12, 3), np.float32)
    x[0, 9, 6, 2] = 1.0  # tile (2, 1), pixel (1, 2) inside it, channel 2
    y = np.asarray(space_to_depth(jnp.asarray(x), 4))
    assert y.shape == (1, 4, 3, 48)
    assert np.argwhere(y).tolist() == [[0, 2, 1, (1 * 4 + 2) * 3 + 2]]


@pytest.mark.parametrize("stem", ["conv", "space_to_depth"])
def test_model_shapes_match_anchor_layout(stem, spec):
    spec = dataclasses.replace(spec, model=dataclasses.replace(SMALL, stem=stem))
    model = FasterRCNN(spec.model, nnx.Rngs(0))
    images = jnp.zeros((2, 64, 64, 3), jnp.uint8)
    levels, logits, deltas = model(images)
    assert [lv.shape for lv in levels] == [(2, 16, 16, 16), (2, 8, 8, 16), (2, 4, 4, 16)]
    anchors, level_sizes = spec.anchors()
    assert level_sizes == (16 * 16 * 3, 8 * 8 * 3, 4 * 4 * 3)
    assert logits.shape == (2, anchors.shape[0]) and deltas.shape == (2, anchors.shape[0], 4)
    cls, box = model.box_head(jnp.zeros((5, 7, 7, 16)))
    assert cls.shape == (5, 11) and box.shape == (5, 11, 4)


def test_unknown_stem_is_refused():
    with pytest.raises(ValueError, match="stem must be"):
        FasterRCNN(dataclasses.replace(SMALL, stem="patchify"), nnx.Rngs(0))


def test_spec_round_trips_through_json(spec):
    assert DetectorSpec.from_json(spec.to_json()) == spec


def test_proposals_are_the_best_anchors_after_nms():
    # Three anchors on one level; zero deltas decode to the anchors themselves.
    anchors = jnp.array([[10, 10, 30, 40], [11, 10, 31, 40], [50, 50, 70, 80]], jnp.float32)
    logits = jnp.array([[3.0, 2.0, 1.0]])
    deltas = jnp.zeros((1, 3, 4))
    boxes, valid = rpn_proposals(logits, deltas, anchors, (3,), (64, 64), pre_nms_top_n=3,
                                 post_nms_top_n=3, nms_iou=0.7)
    # Anchor 1 overlaps anchor 0 with IoU 19/21 > 0.7 -> suppressed; anchor 2 clipped to the image.
    np.testing.assert_array_equal(valid[0], [True, True, False])
    np.testing.assert_allclose(boxes[0, 0], [10, 10, 30, 40])
    np.testing.assert_allclose(boxes[0, 1], [50, 50, 64, 64])


def test_detect_applies_threshold_and_per_class_nms():
    rois = jnp.array([[[10, 10, 30, 40], [11, 10, 31, 40], [12, 11, 31, 41], [40, 40, 50, 60]]],
                     jnp.float32)
    logits = jnp.full((1, 4, 4), -10.0)  # 3 characters + background
    logits = logits.at[0, 0, 1].set(5.0)  # RoI 0: class 1, strong
    logits = logits.at[0, 1, 1].set(4.0)  # RoI 1: class 1 again, overlapping -> suppressed
    logits = logits.at[0, 2, 2].set(4.5)  # RoI 2: class 2, overlapping but another class -> kept
    logits = logits.at[0, 3, 0].set(5.0)  # RoI 3: background
    dets = detect(logits, jnp.zeros((1, 4, 4, 4)), rois, jnp.ones((1, 4), bool), (64, 64),
                  score_threshold=0.5, nms_iou=0.5, max_detections=5)
    valid = np.asarray(dets["valid"][0])
    assert valid.sum() == 2
    np.testing.assert_array_equal(dets["labels"][0][valid], [1, 2])
    np.testing.assert_allclose(dets["boxes"][0][0], [10, 10, 30, 40])
    expected = jax.nn.softmax(logits[0, 0, 1:])
    np.testing.assert_allclose(dets["class_scores"][0, 0], expected, rtol=1e-6)
    assert np.all(np.asarray(dets["labels"][0][~valid]) == 0)


def test_augmentation_moves_boxes_with_the_pixels(detector_cfg):
    """A pure shift moves a bright square and its box alike; nothing is mirrored."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:30, 10:16] = 255
    boxes = np.array([[10, 20, 16, 30], [0, 0, 0, 0]], np.float32)
    labels = np.array([3, 0], np.int32)
    valid = np.array([True, False])
    cfg = dataclasses.replace(detector_cfg.augment, brightness=0, contrast=0, channel_gain=0,
                              noise_std=0, blur_sigma=0, scale=0, rotate_deg=0, shear=0,
                              translate_px=5)
    out, b, lab, v = det_data.augment(np.random.default_rng(1), image, boxes, labels, valid, cfg)
    ys, xs = np.nonzero(out[..., 0] > 127)
    np.testing.assert_allclose(b[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.0)
    assert v.tolist() == [True, False] and lab.tolist() == [3, 0]


def test_augmentation_shears_boxes_with_the_pixels(detector_cfg):
    """A pure shear slants a bright bar; its box becomes the hull of the slanted bar."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[12:52, 28:34] = 255
    boxes = np.array([[28, 12, 34, 52]], np.float32)
    cfg = dataclasses.replace(detector_cfg.augment, brightness=0, contrast=0, channel_gain=0,
                              noise_std=0, blur_sigma=0, scale=0, rotate_deg=0, translate_px=0,
                              shear=0.2)
    out, b, _, v = det_data.augment(np.random.default_rng(4), image, boxes, np.array([1], np.int32),
                                    np.array([True]), cfg)
    ys, xs = np.nonzero(out[..., 0] > 127)
    slope = np.polyfit(ys, xs, 1)[0]
    assert 0.02 < abs(slope) <= 0.2 and v.tolist() == [True]  # slanted, by at most the shear
    np.testing.assert_allclose(b[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.0)


def _bare_crop(detector_cfg, size, around_boxes):
    """Augmentation that only cuts `size` windows (no photometric or affine change)."""
    return dataclasses.replace(detector_cfg.augment, brightness=0, contrast=0, channel_gain=0,
                               noise_std=0, blur_sigma=0, scale=0, rotate_deg=0, shear=0,
                               translate_px=0, crop_px=size, crop_around_boxes=around_boxes)


def test_crop_cuts_pixels_and_boxes_alike(detector_cfg):
    """`augment.crop_px`: a window of the image, every box kept in it covers its bright square,
    boxes mostly outside lose their label, and around_boxes = 1 always holds a box whole."""
    image = np.zeros((96, 96, 3), np.uint8)
    squares = [(8, 8, 20, 24), (40, 50, 52, 62), (70, 12, 86, 28), (60, 72, 72, 90)]
    for x1, y1, x2, y2 in squares:
        image[y1:y2, x1:x2] = 255
    boxes = np.array(squares, np.float32)
    labels = np.arange(1, 5, dtype=np.int32)
    valid = np.ones(4, bool)
    cfg = _bare_crop(detector_cfg, 32, 1.0)
    for seed in range(20):
        out, b, lab, v = det_data.augment(np.random.default_rng(seed), image, boxes, labels, valid, cfg)
        assert out.shape == (32, 32, 3) and b.shape == (4, 4)
        assert v.any()  # the window holds one box whole
        whole = np.all(np.isclose(b[:, 2:] - b[:, :2], boxes[:, 2:] - boxes[:, :2], atol=1e-3), -1)
        assert (whole & v).any()
        for i in np.flatnonzero(v):
            x1, y1, x2, y2 = np.round(b[i]).astype(int)
            assert out[y1:y2, x1:x2, 0].min() > 127  # the box lies on its square
        assert lab[~v].tolist() == [0] * int((~v).sum()) and np.all(b[~v] == 0)
        bright = out[..., 0] > 127
        inside = np.zeros_like(bright)
        for x1, y1, x2, y2 in np.round(b[v]).astype(int):
            inside[y1:y2, x1:x2] = True
        # Bright pixels without a box belong to squares cut to less than half (min_visible).
        assert bright[~inside].sum() <= 3 * 0.5 * 12 * 16


def test_crop_windows_lie_anywhere_without_boxes_or_by_chance(detector_cfg):
    """around_boxes = 0 draws windows over the whole image; the same with no boxes at all."""
    image = np.zeros((96, 96, 3), np.uint8)
    image[40:56, 40:56] = 255
    box = np.array([[40, 40, 56, 56]], np.float32)
    for around, valid in ((0.0, np.array([True])), (1.0, np.array([False]))):
        cfg = _bare_crop(detector_cfg, 32, around)
        origins = [det_data.crop_origin(np.random.default_rng(s), box, valid, (96, 96), 32, around)
                   for s in range(200)]
        assert np.min(origins) < 8 and np.max(origins) > 56 and np.all(np.array(origins) <= 64)
        if valid[0]:
            held = [det_data.augment(np.random.default_rng(s), image, box, np.array([1], np.int32), valid,
                                     cfg)[3][0] for s in range(60)]
            assert 0 < np.mean(held) < 0.6  # sometimes on the box, mostly not


def test_batches_resume_identically(detector_cfg):
    n = 6
    data = det_data.DetectionSet(
        images=np.random.default_rng(0).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8),
        boxes=np.tile(np.array([[[4, 4, 20, 28]]], np.float32), (n, 1, 1)),
        labels=np.ones((n, 1), np.int32), valid=np.ones((n, 1), bool),
        image_ids=np.arange(n), category_ids=(1,))
    cfg = detector_cfg.augment
    full = det_data.batches(data, 4, seed=5, augment_cfg=cfg)
    seq = [next(full) for _ in range(4)]
    resumed = next(det_data.batches(data, 4, seed=5, augment_cfg=cfg, start_step=3))
    for a, b in zip(seq[3], resumed):
        np.testing.assert_array_equal(a, b)


def test_noise_windows_are_standard_normal_and_depend_on_the_rng_alone():
    """The augmentation's pixel noise: windows of a fixed field, with the statistics of fresh
    standard normal noise, different from window to window, and the same for the same generator
    state whatever other image sizes the process saw before (batches are a function of the step)."""
    first = det_data.noise_window(np.random.default_rng(7), (160, 160, 3)).copy()
    assert first.shape == (160, 160, 3) and first.dtype == np.float32
    det_data.noise_window(np.random.default_rng(1), (320, 200, 3))  # another size in between
    np.testing.assert_array_equal(det_data.noise_window(np.random.default_rng(7), (160, 160, 3)), first)
    rng = np.random.default_rng(0)
    windows = np.stack([det_data.noise_window(rng, (64, 48, 3)) for _ in range(200)])
    assert abs(windows.mean()) < 0.01 and abs(windows.std() - 1) < 0.01
    # Neighbouring pixels are independent (no smoothing), and two windows are rarely alike.
    assert abs(np.corrcoef(windows[:, :, :-1].ravel(), windows[:, :, 1:].ravel())[0, 1]) < 0.01
    corr = np.corrcoef(windows.reshape(200, -1))[np.triu_indices(200, 1)]
    assert np.mean(np.abs(corr) > 0.5) < 0.01


def test_augmented_noise_has_the_configured_strength(detector_cfg):
    """`augment.noise_std` on a flat grey image with every other augmentation off: the pixels
    spread by that many grey levels (before rounding to uint8), around the same mean."""
    cfg = dataclasses.replace(detector_cfg.augment, brightness=0, contrast=0, channel_gain=0, noise_std=6.0,
                              blur_sigma=0, scale=0, rotate_deg=0, shear=0, translate_px=0, crop_px=0)
    image = np.full((96, 96, 3), 128, np.uint8)
    box = np.array([[10, 10, 30, 40]], np.float32)
    out, *_ = det_data.augment(np.random.default_rng(3), image, box, np.array([1], np.int32),
                               np.array([True]), cfg)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert abs(out.std() - 6.0) < 0.3 and abs(out.mean() - 128) < 1.0


def test_repeat_factors_by_group():
    groups = np.array(["well"] * 8 + ["poor"] * 2)
    r = det_data.repeat_factors(groups, threshold=0.5)
    # poor: f = 0.2 < 0.5 -> sqrt(0.5 / 0.2); well: f = 0.8 -> 1 (never below one).
    np.testing.assert_allclose(r, [1.0] * 8 + [np.sqrt(2.5)] * 2)
    np.testing.assert_array_equal(det_data.repeat_factors(groups, threshold=0.0), np.ones(10))


def test_batches_with_repeat_factors_show_rare_images_more_often_and_resume():
    n = 10
    data = det_data.DetectionSet(
        images=np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8),
        boxes=np.zeros((n, 1, 4), np.float32), labels=np.zeros((n, 1), np.int32),
        valid=np.zeros((n, 1), bool), image_ids=np.arange(n), category_ids=(1,))
    repeat = np.array([1.0] * 8 + [2.5] * 2)
    gen = det_data.batches(data, 4, seed=3, augment_cfg=None, repeat=repeat)
    shown = np.concatenate([next(gen)[0][:, 0, 0, 0] for _ in range(3000)])
    counts = np.bincount(shown, minlength=n)
    # Expected shares are proportional to the repeat factors: 1 : 2.5.
    np.testing.assert_allclose(counts[8:].mean() / counts[:8].mean(), 2.5, rtol=0.05)
    gen = det_data.batches(data, 4, seed=3, augment_cfg=None, repeat=repeat)
    seq = [next(gen)[0] for _ in range(12)]
    for step in (0, 4, 11):  # 12-14 images, 3 batches an epoch: resume inside and across epochs
        resumed = next(det_data.batches(data, 4, seed=3, augment_cfg=None, start_step=step, repeat=repeat))
        np.testing.assert_array_equal(resumed[0], seq[step])


def _sourced_set(n_real: int, n_synthetic: int) -> det_data.DetectionSet:
    """Images whose pixel value is their index; the first n_real real, the rest synthetic."""
    n = n_real + n_synthetic
    return det_data.DetectionSet(
        images=np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8),
        boxes=np.zeros((n, 1, 4), np.float32), labels=np.zeros((n, 1), np.int32),
        valid=np.zeros((n, 1), bool), image_ids=np.arange(n), category_ids=(1,),
        sources=np.array(["real"] * n_real + ["synthetic"] * n_synthetic, dtype=object))


@pytest.mark.parametrize("plan, steps, n_real, n_synthetic, expected", [
    # linear 75 % -> 25 % of 4 over 5 steps: shares 3, 2.5, 2, 1.5, 1; carried rounding error
    ({"strategy": "mix", "synthetic_schedule": [75, 25]}, 5, 10, 10, [3, 3, 2, 1, 1]),
    ({"strategy": "mix", "synthetic_schedule": [0, 100]}, 3, 10, 10, [0, 2, 4]),
    # sequential: round(10 x 30 / 40) = 8 synthetic steps (7.5 rounds to even), then real
    ({"strategy": "sequential", "synthetic_schedule": None}, 10, 10, 30, [4] * 8 + [0] * 2),
    ({"strategy": "sequential", "synthetic_schedule": None}, 4, 30, 10, [4, 0, 0, 0]),
])
def test_synthetic_per_batch_hand_counts(plan, steps, n_real, n_synthetic, expected):
    counts = det_data.synthetic_per_batch(plan, steps, 4, n_real, n_synthetic)
    assert counts.tolist() == expected


def test_planned_batches_follow_the_plan_cover_each_part_and_resume():
    data = _sourced_set(6, 10)  # images 0-5 real, 6-15 synthetic
    plan = {"strategy": "sequential", "synthetic_schedule": None}
    steps = 16  # round(16 x 10 / 16) = 10 synthetic steps, then 6 real ones
    gen = det_data.planned_batches(data, 4, seed=3, augment_cfg=None, plan=plan, steps=steps)
    seq = [next(gen)[0][:, 0, 0, 0] for _ in range(steps + 2)]
    assert all((b >= 6).all() for b in seq[:10]) and all((b < 6).all() for b in seq[10:])
    # Each part is shown in whole shuffled epochs: 40 synthetic draws = 4 epochs of 10 images.
    np.testing.assert_array_equal(np.bincount(np.concatenate(seq[:10]), minlength=16)[6:], [4] * 10)
    for step in (0, 7, 10, 13):
        resumed = next(det_data.planned_batches(data, 4, seed=3, augment_cfg=None, plan=plan, steps=steps,
                                                start_step=step))
        np.testing.assert_array_equal(resumed[0][:, 0, 0, 0], seq[step])
    schedule = {"strategy": "mix", "synthetic_schedule": [75, 25]}
    gen = det_data.planned_batches(data, 4, seed=3, augment_cfg=None, plan=schedule, steps=5)
    made = [int((next(gen)[0][:, 0, 0, 0] >= 6).sum()) for _ in range(5)]
    assert made == [3, 3, 2, 1, 1]


def test_planned_batches_need_both_parts():
    plan = {"strategy": "sequential", "synthetic_schedule": None}
    with pytest.raises(ValueError, match="needs synthetic images"):
        next(det_data.planned_batches(_sourced_set(6, 0), 4, seed=0, augment_cfg=None, plan=plan, steps=4))


def test_too_many_boxes_is_refused(tmp_path, write_digit_set):
    path = write_digit_set(tmp_path, n_images=1, size_px=96, digits=4, height_px=(14, 18))
    with pytest.raises(ValueError, match="max_boxes"):
        det_data.load_detection_set(path, max_boxes=2)


@pytest.mark.parametrize("stem, block", [("conv", "basic"), ("space_to_depth", "basic"),
                                         ("conv", "bottleneck")])
def test_same_parameter_count_as_the_torchvision_peer(stem, block, spec):
    """The benchmark's torchvision FasterRCNN is built with our shapes: same parameter count."""
    from billetjax.bench.detector import build_torch_detector

    spec = dataclasses.replace(spec, model=dataclasses.replace(SMALL, stem=stem, block=block,
                                                               widths=(16, 32, 64)))
    params = nnx.state(FasterRCNN(spec.model, nnx.Rngs(0)), nnx.Param)
    ours = sum(x.size for x in jax.tree.leaves(params))
    peer = sum(p.numel() for p in build_torch_detector(spec).parameters())
    assert ours == peer


def test_bottleneck_stages_are_resnet50s_body():
    """Widths 256/512/1024/2048 with blocks 3/4/6/3 after a 64-wide stem: the four stages have
    exactly the parameters of torchvision's ResNet-50 layer1-layer4 (GroupNorm and BatchNorm
    both learn a scale and a bias per channel)."""
    import torchvision

    cfg = dataclasses.replace(SMALL, stem_width=64, widths=(256, 512, 1024, 2048), blocks=(3, 4, 6, 3),
                              block="bottleneck", groups=32)
    model = nnx.eval_shape(lambda: FasterRCNN(cfg, nnx.Rngs(0)))
    ours = sum(x.size for x in jax.tree.leaves(nnx.state(model.backbone.stages, nnx.Param)))
    resnet = torchvision.models.resnet50()
    theirs = sum(p.numel() for name, p in resnet.named_parameters() if name.startswith("layer"))
    assert ours == theirs == 23_498_496
    # Stage i's first block carries the stride on its 3x3 convolution (ResNet "v1.5").
    first = model.backbone.stages[1][0]
    assert first.conv1.strides == 1 and first.conv2.strides == 2 and first.proj.strides == 2
    assert first.conv2.kernel.shape == (3, 3, 128, 128)


def test_bottleneck_block_starts_as_the_identity_and_halves_the_map():
    from billetjax.detector.backbone import BottleneckBlock

    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 32))
    same = BottleneckBlock(32, 32, 1, 8, nnx.Rngs(0), jnp.float32)
    assert same.proj is None and same.conv1.kernel.shape == (1, 1, 32, 8)
    # The last norm's scale starts at zero, so the residual branch adds nothing yet.
    np.testing.assert_allclose(same(x), jax.nn.relu(x), atol=0)
    down = BottleneckBlock(32, 64, 2, 8, nnx.Rngs(0), jnp.float32)
    assert down(x).shape == (2, 4, 4, 64)


def test_unknown_block_and_precision_are_refused():
    with pytest.raises(ValueError, match="block must be one of"):
        FasterRCNN(dataclasses.replace(SMALL, block="dense"), nnx.Rngs(0))
    with pytest.raises(ValueError, match="precision must be one of"):
        FasterRCNN(dataclasses.replace(SMALL, precision="float16"), nnx.Rngs(0))


def test_spec_written_before_block_and_precision_existed_loads_as_basic_float32(spec):
    """A params.msgpack of an earlier version lacks the two keys; those detectors had basic blocks
    and computed in float32."""
    import json

    old = json.loads(spec.to_json())
    del old["model"]["block"], old["model"]["precision"]
    loaded = DetectorSpec.from_json(json.dumps(old))
    assert loaded.model.block == "basic" and loaded.model.precision == "float32"
    assert loaded == spec


def test_jitted_initialisation_is_the_eager_constructions_weights():
    """models.init_detector (one jitted program, the key an argument) gives the structure and,
    to float32 rounding, the weights of `FasterRCNN(cfg, nnx.Rngs(seed))`; another seed other
    weights, the same seed the same ones."""
    from billetjax.detector.models import init_detector

    graphdef, params = init_detector(SMALL, 7)
    eager_graphdef, eager = nnx.split(FasterRCNN(SMALL, nnx.Rngs(7)), nnx.Param)
    assert graphdef == eager_graphdef
    ours, theirs = jax.tree.leaves(params), jax.tree.leaves(eager)
    assert [x.shape for x in ours] == [x.shape for x in theirs] and len(ours) > 20
    for x, y in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(x, y) for x, y in zip(ours, jax.tree.leaves(init_detector(SMALL, 7)[1])))
    other = jax.tree.leaves(init_detector(SMALL, 8)[1])
    assert not all(np.array_equal(x, y) for x, y in zip(ours, other))
