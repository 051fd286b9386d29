"""billetjax.detector.ops against torchvision (the independent reference) on random and edge
inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection._utils import BoxCoder  # noqa: E402

from billetjax.detector import ops  # noqa: E402

torch.set_num_threads(1)


def random_boxes(rng, n, extent=100.0, min_size=1.0, max_size=40.0, dtype=np.float32):
    xy = rng.uniform(-10, extent, (n, 2))
    wh = rng.uniform(min_size, max_size, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


def edge_boxes():
    """Degenerate (zero width/height/area), identical, nested and out-of-image boxes."""
    return np.array(
        [
            [10, 10, 10, 10],  # a point
            [10, 10, 10, 30],  # zero width
            [5, 20, 25, 20],  # zero height
            [0, 0, 20, 20],
            [0, 0, 20, 20],  # identical to the previous one
            [5, 5, 15, 15],  # nested
            [-30, -30, -10, -10],  # entirely outside the image
            [90, 90, 140, 130],  # past the border
            [10, 10, 10, 10],  # the same point again
        ],
        np.float32,
    )


# ---------------------------------------------------------------- box_iou


def test_box_iou_random_and_edges():
    rng = np.random.default_rng(0)
    a = np.concatenate([random_boxes(rng, 40), edge_boxes()])
    b = np.concatenate([edge_boxes(), random_boxes(rng, 30)])
    ours = np.asarray(jax.jit(ops.box_iou)(a, b))
    ref = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    both_degenerate = np.isnan(ref)
    assert both_degenerate.any()  # the edge set contains point-vs-point pairs
    np.testing.assert_allclose(ours[~both_degenerate], ref[~both_degenerate], rtol=1e-6, atol=1e-7)
    # Documented difference: 0 instead of torchvision's 0/0 = nan.
    assert (ours[both_degenerate] == 0).all()


def test_box_iou_empty():
    assert ops.box_iou(
        np.zeros((0, 4), np.float32), random_boxes(np.random.default_rng(1), 3)
    ).shape == (0, 3)


# ---------------------------------------------------------------- nms


def torch_nms(boxes, scores, thr):
    return torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()


def assert_same_keep(ours, ref, max_output):
    ours = np.asarray(ours)
    assert ours.shape == (max_output,) and ours.dtype == np.int32
    n = min(len(ref), max_output)
    np.testing.assert_array_equal(ours[:n], ref[:n])
    assert (ours[n:] == -1).all()


# The threshold is traced: one compilation per max_output serves every threshold.
nms_jit = jax.jit(ops.nms, static_argnames=("max_output",))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_random_with_ties(threshold):
    rng = np.random.default_rng(int(threshold * 10))
    boxes = random_boxes(rng, 400)
    # Scores on a coarse grid: many exact ties, whose order must follow torchvision's.
    scores = (rng.integers(0, 20, 400) / 20).astype(np.float32)
    ref = torch_nms(boxes, scores, threshold)
    for max_output in (400, 17, 1):
        assert_same_keep(
            nms_jit(boxes, scores, iou_threshold=threshold, max_output=max_output), ref, max_output
        )


def test_nms_edges_degenerate_identical_and_all_equal_scores():
    boxes = edge_boxes()
    for scores in (
        np.ones(len(boxes), np.float32),
        np.linspace(1, 0, len(boxes)).astype(np.float32),
    ):
        for thr in (0.0, 0.5):
            ref = torch_nms(boxes, scores, thr)
            assert_same_keep(nms_jit(boxes, scores, iou_threshold=thr, max_output=12), ref, 12)


def test_nms_all_suppressed_but_one():
    boxes = np.tile(np.array([[3, 4, 30, 40]], np.float32), (50, 1))
    scores = np.random.default_rng(2).uniform(size=50).astype(np.float32)
    keep = np.asarray(nms_jit(boxes, scores, iou_threshold=0.5, max_output=10))
    assert keep[0] == np.argmax(scores) and (keep[1:] == -1).all()
    assert_same_keep(keep, torch_nms(boxes, scores, 0.5), 10)


def test_nms_valid_mask_equals_nms_of_the_subset():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 300)
    scores = rng.uniform(size=300).astype(np.float32)
    valid = rng.uniform(size=300) < 0.6
    subset = np.flatnonzero(valid)
    ref = subset[torch_nms(boxes[subset], scores[subset], 0.5)]
    assert_same_keep(nms_jit(boxes, scores, 0.5, 300, valid=valid), ref, 300)
    assert (np.asarray(nms_jit(boxes, scores, 0.5, 5, valid=np.zeros(300, bool))) == -1).all()


def test_nms_empty_and_vmap():
    assert (
        np.asarray(ops.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5, 4)) == -1
    ).all()
    rng = np.random.default_rng(4)
    boxes = np.stack([random_boxes(rng, 200) for _ in range(3)])
    scores = rng.uniform(size=(3, 200)).astype(np.float32)
    keep = jax.jit(jax.vmap(lambda b, s: ops.nms(b, s, 0.6, 150)))(boxes, scores)
    for i in range(3):
        assert_same_keep(keep[i], torch_nms(boxes[i], scores[i], 0.6), 150)


def test_batched_nms_matches_torchvision():
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 500)
    scores = (
        rng.permutation(500).astype(np.float32) / 500
    )  # distinct: order across classes is defined
    idxs = rng.integers(0, 11, 500)
    ref = torchvision.ops.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), 0.5
    ).numpy()
    ours = jax.jit(ops.batched_nms, static_argnames=("iou_threshold", "max_output"))(
        boxes, scores, idxs, iou_threshold=0.5, max_output=500
    )
    assert_same_keep(ours, ref, 500)
    # Identical boxes of different classes survive together.
    same = np.tile(np.array([[0, 0, 10, 10]], np.float32), (3, 1))
    keep = ops.batched_nms(same, np.array([0.9, 0.8, 0.7], np.float32), np.array([1, 2, 1]), 0.5, 3)
    np.testing.assert_array_equal(keep, [0, 1, -1])


# ---------------------------------------------------------------- roi_align


def torch_roi_align(features, boxes, batch_index, output_size, scale, ratio, aligned):
    rois = torch.from_numpy(np.concatenate([batch_index[:, None].astype(boxes.dtype), boxes], 1))
    feats = torch.from_numpy(features).permute(0, 3, 1, 2)
    out = torchvision.ops.roi_align(feats, rois, output_size, scale, ratio, aligned)
    return out.permute(0, 2, 3, 1).numpy()


def roi_cases(rng):
    # Feature map 2 x 13 x 17 at spatial scale 0.25: the image is 52 x 68 px.
    boxes = np.concatenate(
        [
            random_boxes(rng, 30, extent=70, min_size=0.5, max_size=50, dtype=np.float64),
            np.array(
                [
                    [10, 10, 10, 10],  # degenerate
                    [20, 5, 20, 40],  # zero width
                    [-20, -20, -2, -3],  # outside the image
                    [60, 40, 90, 80],  # past the bottom-right border
                    [-8, -8, 80, 70],  # covers everything
                    [66, 50, 68, 52],  # in the last cells
                ]
            ),
        ]
    )
    batch_index = rng.integers(0, 2, len(boxes))
    return boxes, batch_index


roi_align_jit = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("output_size,ratio", [((7, 7), 2), ((3, 5), 1), ((4, 4), 3)])
def test_roi_align_forward_float64(aligned, output_size, ratio):
    rng = np.random.default_rng(6)
    features = rng.normal(size=(2, 13, 17, 3))
    boxes, batch_index = roi_cases(rng)
    with jax.enable_x64(True):
        ours = np.asarray(
            roi_align_jit(features, boxes, batch_index, output_size, 0.25, ratio, aligned)
        )
    ref = torch_roi_align(features, boxes, batch_index, output_size, 0.25, ratio, aligned)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_roi_align_float32():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(2, 13, 17, 8)).astype(np.float32)
    boxes, batch_index = roi_cases(rng)
    boxes = boxes.astype(np.float32)
    ours = roi_align_jit(features, boxes, batch_index, (7, 7), 0.25, 2, True)
    assert ours.dtype == jnp.float32
    ref = torch_roi_align(features, boxes, batch_index, (7, 7), 0.25, 2, True)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_gradient_matches_torch_autograd(aligned):
    rng = np.random.default_rng(8)
    features = rng.normal(size=(2, 13, 17, 3))
    boxes, batch_index = roi_cases(rng)
    cotangent = rng.normal(size=(len(boxes), 5, 4, 3))

    def loss(f):
        return jnp.sum(ops.roi_align(f, boxes, batch_index, (5, 4), 0.25, 2, aligned) * cotangent)

    with jax.enable_x64(True):
        ours = np.asarray(jax.jit(jax.grad(loss))(features))
    feats = torch.from_numpy(features).permute(0, 3, 1, 2).requires_grad_(True)
    rois = torch.from_numpy(np.concatenate([batch_index[:, None].astype(np.float64), boxes], 1))
    out = torchvision.ops.roi_align(feats, rois, (5, 4), 0.25, 2, aligned).permute(0, 2, 3, 1)
    (out * torch.from_numpy(cotangent)).sum().backward()
    np.testing.assert_allclose(ours, feats.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-10, atol=1e-12)


def test_roi_align_refuses_adaptive_sampling():
    with pytest.raises(ValueError, match="sampling_ratio"):
        ops.roi_align(
            np.zeros((1, 4, 4, 1), np.float32),
            np.zeros((1, 4), np.float32),
            np.zeros(1, int),
            2,
            1.0,
            0,
        )


# ---------------------------------------------------------------- box coding


def test_smooth_l1_matches_torch():
    """Both sides of the transition at beta = 1/9 and the transition itself."""
    x = np.concatenate([np.random.default_rng(12).normal(scale=0.3, size=500),
                        [0.0, 1 / 9, -1 / 9, 2.0, -5.0]]).astype(np.float32)
    ref = torch.nn.functional.smooth_l1_loss(torch.from_numpy(x), torch.zeros(len(x)), reduction="none",
                                             beta=ops.SMOOTH_L1_BETA).numpy()
    assert ops.SMOOTH_L1_BETA == 1 / 9
    np.testing.assert_allclose(np.asarray(jax.jit(ops.smooth_l1)(x)), ref, rtol=1e-6, atol=1e-7)



def test_encode_decode_match_boxcoder():
    rng = np.random.default_rng(9)
    proposals = random_boxes(rng, 200)
    gt = random_boxes(rng, 200)
    for weights in ((10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)):
        coder = BoxCoder(weights)
        ref = coder.encode_single(torch.from_numpy(gt), torch.from_numpy(proposals)).numpy()
        ours = np.asarray(jax.jit(ops.encode_boxes, static_argnums=2)(gt, proposals, weights))
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
        # Large deltas exercise the log(1000/16) clip of dw, dh.
        deltas = rng.normal(scale=3 * np.asarray(weights), size=(200, 4)).astype(np.float32)
        ref = coder.decode_single(torch.from_numpy(deltas), torch.from_numpy(proposals)).numpy()
        ours = np.asarray(jax.jit(ops.decode_boxes, static_argnums=2)(deltas, proposals, weights))
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-3)
        # Round trip.
        back = ops.decode_boxes(ops.encode_boxes(gt, proposals, weights), proposals, weights)
        np.testing.assert_allclose(np.asarray(back), gt, rtol=1e-5, atol=1e-3)


def test_decode_class_specific_deltas():
    rng = np.random.default_rng(10)
    proposals = random_boxes(rng, 20)
    deltas = rng.normal(size=(20, 4 * 3)).astype(np.float32)
    ref = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(
        torch.from_numpy(deltas), torch.from_numpy(proposals)
    )
    ours = ops.decode_boxes(deltas.reshape(20, 3, 4), proposals[:, None, :])
    np.testing.assert_allclose(
        np.asarray(ours), ref.numpy().reshape(20, 3, 4), rtol=1e-5, atol=1e-4
    )


def test_decode_clips_huge_scale():
    box = np.array([[0, 0, 16, 16]], np.float32)
    out = np.asarray(ops.decode_boxes(np.array([[0, 0, 1e4, 1e4]], np.float32), box))
    np.testing.assert_allclose(out, [[-492, -492, 508, 508]], rtol=1e-5)  # 16 * 1000/16 = 1000 wide


def test_clip_boxes():
    boxes = np.concatenate([random_boxes(np.random.default_rng(11), 50, extent=120), edge_boxes()])
    ref = torchvision.ops.clip_boxes_to_image(torch.from_numpy(boxes), (60, 90)).numpy()
    np.testing.assert_array_equal(np.asarray(ops.clip_boxes(boxes, 60, 90)), ref)


def test_fpn_levels_match_torchvision_level_mapper():
    from torchvision.ops.poolers import LevelMapper

    rng = np.random.default_rng(12)
    boxes = random_boxes(rng, 300, extent=400, min_size=2, max_size=500)
    for scale in (224.0, 32.0):
        ref = LevelMapper(2, 5, canonical_scale=int(scale))([torch.from_numpy(boxes)]).numpy()
        np.testing.assert_array_equal(ops.fpn_levels(boxes, 2, 5, canonical_scale=scale), ref)


@pytest.mark.parametrize("aligned", [True, False])
def test_multiscale_roi_align_equals_per_level_torchvision(aligned):
    rng = np.random.default_rng(13)
    scales = (1 / 4, 1 / 8, 1 / 16)
    features = [rng.normal(size=(2, 64 // s, 48 // s, 3)) for s in (4, 8, 16)]
    boxes = random_boxes(rng, 40, extent=50, max_size=30, dtype=np.float64)
    batch_index = rng.integers(0, 2, 40)
    levels = rng.integers(0, 3, 40)
    with jax.enable_x64(True):
        ours = np.asarray(
            jax.jit(ops.multiscale_roi_align, static_argnums=(4, 5, 6, 7))(
                features, boxes, batch_index, levels, (7, 7), scales, 2, aligned
            )
        )
    for level, (f, scale) in enumerate(zip(features, scales, strict=True)):
        sel = levels == level
        ref = torch_roi_align(f, boxes[sel], batch_index[sel], (7, 7), scale, 2, aligned)
        np.testing.assert_allclose(ours[sel], ref, rtol=1e-10, atol=1e-12)
