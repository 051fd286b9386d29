"""The two stages' training targets and losses (billetjax.detector.rpn, .roi_heads) and the shared
primitives under them (.anchors, .matcher, .sampling) against torchvision's AnchorGenerator,
Matcher, RegionProposalNetwork and RoIHeads (the independent references), plus the sampler's
counts and randomness."""

from functools import partial

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection._utils import BoxCoder, Matcher  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.detection.roi_heads import RoIHeads  # noqa: E402
from torchvision.models.detection.rpn import RegionProposalNetwork  # noqa: E402

from billetjax.detector import anchors, matcher, roi_heads, rpn, sampling  # noqa: E402

torch.set_num_threads(1)

# torchvision's settings of the two stages (RegionProposalNetwork, RoIHeads), which the references
# below are built with.
TORCHVISION_RPN = {"fg_iou_threshold": 0.7, "bg_iou_threshold": 0.3, "num_samples": 256,
                   "positive_fraction": 0.5, "weights": (1.0, 1.0, 1.0, 1.0)}
TORCHVISION_ROI = {"num_samples": 512, "positive_fraction": 0.25, "fg_iou_threshold": 0.5,
                   "bg_iou_threshold": 0.5, "weights": (10.0, 10.0, 5.0, 5.0)}


def digit_boxes(rng, n, extent=200.0):
    """COCO [x, y, w, h] boxes shaped like stamped digits: 10–60 px tall, h/w about 1.4–2."""
    h = rng.uniform(10, 60, n)
    w = h / rng.uniform(1.4, 2.0, n)
    xy = rng.uniform(0, extent, (n, 2))
    return np.stack([xy[:, 0], xy[:, 1], w, h], axis=1)


def xywh_to_xyxy(b):
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1).astype(np.float32)


# ---------------------------------------------------------------- anchors


def test_pyramid_anchors_match_torchvision_anchor_generator():
    # 13 px at ratio 1 gives +-6.5: exercises torch's round-half-to-even.
    sizes = ((10.4, 13.0), (22.0, 27.5), (48.0, 61.0))
    ratios = (0.7, 1.0, 1.55, 2.0)
    # torchvision infers each stride as image size // feature size: 112 x 80 px divide exactly.
    hws = [(28, 20), (14, 10), (7, 5)]
    strides = [4, 8, 16]
    image = torch.zeros(1, 3, 112, 80)
    feats = [torch.zeros(1, 2, h, w) for h, w in hws]
    ref = AnchorGenerator(sizes, (ratios,) * 3)(ImageList(image, [(112, 80)]), feats)[0].numpy()
    ours = anchors.pyramid_anchors(hws, strides, sizes, ratios)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)
    # One level, non-square stride.
    gen = AnchorGenerator(((16.0,),), ((1.5,),))
    ref = gen(ImageList(torch.zeros(1, 3, 40, 60), [(40, 60)]), [torch.zeros(1, 1, 10, 20)])[
        0
    ].numpy()
    np.testing.assert_array_equal(anchors.anchor_grid((10, 20), (4, 3), (16.0,), (1.5,)), ref)


def test_anchor_sizes_from_digit_boxes():
    rng = np.random.default_rng(0)
    boxes = digit_boxes(rng, 2000)
    boxes[:3, 2] = 0  # boxes without area are skipped, not fatal
    sizes, ratios, summary = anchors.anchor_sizes_from_boxes(
        boxes, num_levels=3, sizes_per_level=2, num_aspect_ratios=3, size_quantiles=(0.02, 0.98),
        strides=[4, 8, 16],
    )
    flat = [s for level in sizes for s in level]
    assert len(sizes) == 3 and all(len(level) == 2 for level in sizes)
    assert flat == sorted(flat) and 6 < flat[0] < 12 and 35 < flat[-1] < 50  # sqrt(w*h) of digits
    assert (
        len(ratios) == 3 and all(1.35 < r < 2.05 for r in ratios) and list(ratios) == sorted(ratios)
    )
    assert (
        "aspect ratios (h/w)" in summary
        and "3 without area skipped" in summary
        and "coverage" in summary
    )
    with pytest.raises(ValueError, match="positive"):
        anchors.anchor_sizes_from_boxes(
            np.zeros((4, 4)), num_levels=2, sizes_per_level=1, num_aspect_ratios=3,
            size_quantiles=(0.02, 0.98),
        )


def test_best_anchor_iou_equals_brute_force():
    rng = np.random.default_rng(1)
    boxes = digit_boxes(rng, 300, extent=150)
    sizes, ratios = ((9.0, 14.0), (25.0,), (45.0,)), (1.4, 1.8)
    strides = [4, 8, 16]
    # A grid far larger than the boxes' extent, so that no border cuts the brute force.
    grid = anchors.pyramid_anchors([(80, 80), (40, 40), (20, 20)], strides, sizes, ratios)
    brute = (
        torchvision.ops.box_iou(torch.from_numpy(xywh_to_xyxy(boxes)), torch.from_numpy(grid))
        .max(1)
        .values
    )
    best = anchors.best_anchor_iou(boxes, strides, sizes, ratios)
    np.testing.assert_allclose(best, brute.numpy(), atol=1e-5)


# ---------------------------------------------------------------- matcher


match_jit = jax.jit(matcher.match, static_argnums=(2, 3, 4))


@pytest.mark.parametrize("allow_low,num_gt", [(False, 8), (True, 8), (True, 130)])
def test_match_equals_torchvision_matcher_with_ties_and_padding(allow_low, num_gt):
    """8 ground-truth boxes take the unrolled row loop, 130 the reductions over the G axis."""
    rng = np.random.default_rng(2 + allow_low + num_gt)
    num_pred = 60  # one shape per case: one compilation per threshold pair
    for trial in range(24 if num_gt < 100 else 6):
        # IoU on a coarse grid: ties within rows and columns, zeros, exact threshold values.
        iou = (rng.integers(0, 11, (num_pred, num_gt)) / 10).astype(np.float32)
        iou *= rng.uniform(size=iou.shape) < 0.6
        gt_valid = rng.uniform(size=num_gt) < 0.7
        gt_valid[rng.integers(num_gt)] = True
        high, low = [(0.7, 0.3), (0.5, 0.5), (0.6, 0.4)][trial % 3]
        ours = np.asarray(match_jit(iou, gt_valid, high, low, allow_low))
        valid_cols = np.flatnonzero(gt_valid)
        ref = Matcher(high, low, allow_low)(torch.from_numpy(iou[:, valid_cols].T.copy())).numpy()
        ref = np.where(ref >= 0, valid_cols[np.maximum(ref, 0)], ref)
        np.testing.assert_array_equal(ours, ref)


def test_match_without_valid_ground_truth():
    iou = np.random.default_rng(4).uniform(size=(60, 8)).astype(np.float32)
    assert (np.asarray(match_jit(iou, np.zeros(8, bool), 0.7, 0.3, True)) == -1).all()


# ---------------------------------------------------------------- sampler


def make_labels(rng, n, p_pos, p_neg):
    u = rng.uniform(size=n)
    return np.where(u < p_pos, 1, np.where(u < p_pos + p_neg, 0, -1)).astype(np.int32)


sample_jit = jax.jit(sampling.sample_balanced, static_argnums=(2, 3))
sample_indices_jit = jax.jit(sampling.sample_balanced_indices, static_argnums=(2, 3))


@pytest.mark.parametrize("num_pos,num_neg", [(3, 500), (100, 500), (100, 20), (0, 5), (0, 0)])
def test_sample_balanced_counts(num_pos, num_neg):
    rng = np.random.default_rng(5)
    labels = np.full(700, -1, np.int32)
    perm = rng.permutation(700)
    labels[perm[:num_pos]] = 1
    labels[perm[num_pos : num_pos + num_neg]] = 0
    pos, neg = map(np.asarray, sample_jit(jax.random.key(0), labels, 64, 0.25))
    # torchvision BalancedPositiveNegativeSampler's counts.
    expect_pos = min(num_pos, 16)
    expect_neg = min(num_neg, 64 - expect_pos)
    assert pos.sum() == expect_pos and neg.sum() == expect_neg
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    idx, is_pos, valid = map(np.asarray, sample_indices_jit(jax.random.key(0), labels, 64, 0.25))
    assert idx.shape == (64,) and valid.sum() == expect_pos + expect_neg
    assert (
        valid[: valid.sum()].all() and is_pos[:expect_pos].all() and not is_pos[expect_pos:].any()
    )
    np.testing.assert_array_equal(np.sort(idx[valid & is_pos]), np.flatnonzero(pos))
    np.testing.assert_array_equal(np.sort(idx[valid & ~is_pos]), np.flatnonzero(neg))


def test_sample_balanced_is_uniform_and_seeded():
    labels = make_labels(np.random.default_rng(6), 200, 0.2, 0.5)
    keys = jax.random.split(jax.random.key(1), 2000)
    sample = jax.jit(jax.vmap(lambda k: sampling.sample_balanced(k, labels, 32, 0.25)))
    pos, neg = map(np.asarray, sample(keys))
    # Every eligible box is drawn with the same probability: 8 of #pos, 24 of #neg.
    n_pos, n_neg = (labels == 1).sum(), (labels == 0).sum()
    freq_pos = pos[:, labels == 1].mean(0)
    freq_neg = neg[:, labels == 0].mean(0)
    np.testing.assert_allclose(freq_pos, 8 / n_pos, atol=0.035)
    np.testing.assert_allclose(freq_neg, 24 / n_neg, atol=0.035)
    assert not pos[:, labels != 1].any() and not neg[:, labels != 0].any()
    # Same key, same sample; different keys, (almost always) different samples.
    again = np.asarray(sample(keys[:5])[0])
    np.testing.assert_array_equal(again, pos[:5])
    assert len({p.tobytes() for p in pos[:50]}) == 50


# ---------------------------------------------------------------- RPN targets


def padded_gt(rng, num_valid, pad_to, extent=180.0):
    boxes = np.zeros((pad_to, 4), np.float32)
    boxes[:num_valid] = xywh_to_xyxy(digit_boxes(rng, num_valid, extent))
    labels = np.zeros(pad_to, np.int32)
    labels[:num_valid] = rng.integers(1, 11, num_valid)
    valid = np.arange(pad_to) < num_valid
    return boxes, labels, valid


def torch_rpn(fg=0.7, bg=0.3):
    return RegionProposalNetwork(
        AnchorGenerator(), torch.nn.Identity(), fg, bg, 256, 0.5, {"training": 1, "testing": 1},
        {"training": 1, "testing": 1}, 0.7,
    )  # fmt: skip


@pytest.mark.parametrize("num_valid", [1, 7, 0])
def test_rpn_targets_match_torchvision_assignment(num_valid):
    rng = np.random.default_rng(7 + num_valid)
    grid = anchors.pyramid_anchors(
        [(50, 50), (25, 25)], [4, 8], ((12.0, 18.0), (28.0, 40.0)), (1.4, 1.8)
    )
    gt_boxes, _, gt_valid = padded_gt(rng, num_valid, 10)
    out = jax.jit(partial(rpn.anchor_targets, **TORCHVISION_RPN))(
        grid, gt_boxes, gt_valid, jax.random.key(3)
    )
    tv_rpn = torch_rpn()
    labels, matched = tv_rpn.assign_targets_to_anchors(
        [torch.from_numpy(grid)], [{"boxes": torch.from_numpy(gt_boxes[:num_valid])}]
    )
    labels = labels[0].numpy()
    ref_deltas = (
        BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(matched[0], torch.from_numpy(grid)).numpy()
    )
    np.testing.assert_array_equal(np.asarray(out.objectness), (labels == 1).astype(np.float32))
    positive_all = labels == 1
    np.testing.assert_allclose(
        np.asarray(out.deltas)[positive_all], ref_deltas[positive_all], rtol=1e-5, atol=1e-5
    )
    assert (np.asarray(out.deltas)[~positive_all] == 0).all() and np.isfinite(
        np.asarray(out.deltas)
    ).all()
    pos, neg = np.asarray(out.positive), np.asarray(out.negative)
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert pos.sum() == min(positive_all.sum(), 128)
    assert pos.sum() + neg.sum() == min(256, pos.sum() + (labels == 0).sum())
    if num_valid == 0:
        assert not pos.any() and neg.sum() == 256


# ---------------------------------------------------------------- RoI head targets


def torch_roi_heads():
    return RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 100)


@pytest.mark.parametrize("num_valid", [6, 0])
def test_roi_targets_match_torchvision_assignment(num_valid):
    rng = np.random.default_rng(11 + num_valid)
    gt_boxes, gt_labels, gt_valid = padded_gt(rng, num_valid, 12)
    # Proposals: jittered ground truth (foreground) and random boxes (background), some padding.
    jitter = np.repeat(gt_boxes[:num_valid], 40, axis=0) + rng.normal(
        scale=3, size=(40 * num_valid, 4)
    )
    random = xywh_to_xyxy(digit_boxes(rng, 700 - len(jitter)))
    proposals = np.concatenate([jitter, random]).astype(np.float32)
    proposal_valid = rng.uniform(size=700) < 0.9

    out = jax.jit(partial(roi_heads.sample_rois, **TORCHVISION_ROI))(
        proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, jax.random.key(4)
    )
    heads = torch_roi_heads()
    candidates = np.concatenate([proposals, gt_boxes]).astype(np.float32)
    candidate_valid = np.concatenate([proposal_valid, gt_valid])
    # torchvision's assignment of the proposals it would see (valid ones, then the ground truth).
    kept = np.flatnonzero(candidate_valid)
    tv_props = heads.add_gt_proposals(
        [torch.from_numpy(proposals[proposal_valid])], [torch.from_numpy(gt_boxes[:num_valid])]
    )
    np.testing.assert_array_equal(tv_props[0].numpy(), candidates[kept])
    matched, labels = heads.assign_targets_to_proposals(
        tv_props,
        [torch.from_numpy(gt_boxes[:num_valid])],
        [torch.from_numpy(gt_labels[:num_valid]).long()],
    )
    ref_labels = np.full(len(candidates), -9)
    ref_labels[kept] = labels[0].numpy()
    gt_for_coder = gt_boxes[:num_valid] if num_valid else np.zeros((1, 4), np.float32)
    ref_deltas = np.zeros((len(candidates), 4), np.float32)
    ref_deltas[kept] = heads.box_coder.encode_single(
        torch.from_numpy(gt_for_coder)[matched[0]], tv_props[0]
    ).numpy()

    index, valid, positive = np.asarray(out.index), np.asarray(out.valid), np.asarray(out.positive)
    assert index.shape == (512,)
    assert candidate_valid[index[valid]].all()  # padding is never sampled
    np.testing.assert_array_equal(np.asarray(out.rois)[valid], candidates[index[valid]])
    np.testing.assert_array_equal(np.asarray(out.labels)[valid], ref_labels[index[valid]])
    assert (np.asarray(out.labels)[~valid] == 0).all()
    np.testing.assert_array_equal(positive, valid & (ref_labels[index] > 0))
    np.testing.assert_allclose(
        np.asarray(out.deltas)[positive], ref_deltas[index[positive]], rtol=1e-5, atol=1e-5
    )
    assert (np.asarray(out.deltas)[~positive] == 0).all()
    num_fg, num_bg = (ref_labels > 0).sum(), (ref_labels == 0).sum()
    assert positive.sum() == min(num_fg, 128)
    assert valid.sum() == positive.sum() + min(num_bg, 512 - positive.sum())
    assert len(np.unique(index[valid])) == valid.sum()


def test_roi_targets_vmap_over_images_and_too_few_candidates():
    rng = np.random.default_rng(20)
    batch = [padded_gt(rng, n, 5) for n in (2, 5)]
    gt_boxes = np.stack([b[0] for b in batch])
    gt_labels = np.stack([b[1] for b in batch])
    gt_valid = np.stack([b[2] for b in batch])
    proposals = np.stack([xywh_to_xyxy(digit_boxes(rng, 30)) for _ in range(2)])
    proposal_valid = np.ones((2, 30), bool)
    keys = jax.random.split(jax.random.key(5), 2)
    fn = jax.jit(
        jax.vmap(
            lambda p, pv, b, lab, v, k: roi_heads.sample_rois(
                p, pv, b, lab, v, k, **{**TORCHVISION_ROI, "num_samples": 64}
            )
        )
    )
    out = fn(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, keys)
    assert out.rois.shape == (2, 64, 4) and out.labels.shape == (2, 64)
    # Fewer candidates (30 proposals + the valid ground truth) than samples: the rest is padding.
    np.testing.assert_array_equal(np.asarray(out.valid).sum(1), [32, 35])
    # Every valid ground-truth box is its own perfect proposal: at least these are foreground.
    assert (np.asarray(out.positive).sum(1) >= [2, 5]).all()


# ---------------------------------------------------------------- the two stages' losses


def test_rpn_losses_equal_torchvisions_when_every_anchor_is_sampled():
    """`rpn.losses` against RegionProposalNetwork.compute_loss on torchvision's own targets. A
    sample as large as the anchors, all positives allowed, takes every labelled anchor on both
    sides, so the random draws cannot differ; the second image has no ground truth."""
    from billetjax.detector.spec import RPNConfig

    rng = np.random.default_rng(31)
    grid = anchors.pyramid_anchors([(16, 16), (8, 8)], [4, 8], ((12.0, 18.0), (28.0, 40.0)), (1.4, 1.8))
    num_anchors = len(grid)
    gts = [padded_gt(rng, n, 6, extent=40.0) for n in (5, 0)]
    gt_boxes, gt_valid = np.stack([g[0] for g in gts]), np.stack([g[2] for g in gts])
    logits = rng.normal(size=(2, num_anchors)).astype(np.float32)
    deltas = (0.3 * rng.normal(size=(2, num_anchors, 4))).astype(np.float32)
    cfg = RPNConfig(pre_nms_top_n_train=10, post_nms_top_n_train=10, pre_nms_top_n_test=10,
                    post_nms_top_n_test=10, nms_iou=0.7, fg_iou=0.7, bg_iou=0.3,
                    batch_size_per_image=num_anchors, positive_fraction=1.0)
    ours = jax.jit(lambda *a: rpn.losses(*a, cfg))(logits, deltas, grid, gt_boxes, gt_valid,
                                                   jax.random.key(2))

    tv_rpn = RegionProposalNetwork(
        AnchorGenerator(), torch.nn.Identity(), 0.7, 0.3, num_anchors, 1.0,
        {"training": 1, "testing": 1}, {"training": 1, "testing": 1}, 0.7,
    )  # fmt: skip
    grids = [torch.from_numpy(grid)] * 2
    labels, matched = tv_rpn.assign_targets_to_anchors(
        grids, [{"boxes": torch.from_numpy(g[0][g[2]])} for g in gts])
    assert (labels[0] == 1).sum() > 0
    regression_targets = tv_rpn.box_coder.encode(matched, grids)
    objectness_loss, box_loss = tv_rpn.compute_loss(
        torch.from_numpy(logits).reshape(-1, 1), torch.from_numpy(deltas).reshape(-1, 4), labels,
        regression_targets)
    assert set(ours) == {"rpn_cls", "rpn_box"}
    np.testing.assert_allclose(float(ours["rpn_cls"]), objectness_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(float(ours["rpn_box"]), box_loss.item(), rtol=1e-5)


def test_roi_losses_equal_torchvisions_fastrcnn_loss():
    """`roi_heads.losses` against torchvision's fastrcnn_loss on the same sampled RoIs (drawn with
    the key of each image as `losses` draws them) and the same head outputs. Both images have
    fewer candidates than samples: the padding must count neither in the losses nor in their
    normalisation."""
    from torchvision.models.detection.roi_heads import fastrcnn_loss

    from billetjax.detector.spec import RoIConfig

    rng = np.random.default_rng(41)
    num_classes, pool_size, channels = 10, 3, 8
    gts = [padded_gt(rng, n, 6, extent=90.0) for n in (5, 3)]
    gt_boxes, gt_labels, gt_valid = (np.stack([g[i] for g in gts]) for i in range(3))
    jittered = gt_boxes[:, :3, None, :] + rng.normal(scale=2, size=(2, 3, 8, 4))
    proposals = np.concatenate([jittered.reshape(2, 24, 4),
                                np.stack([xywh_to_xyxy(digit_boxes(rng, 16, 90.0)) for _ in range(2)])],
                               axis=1).astype(np.float32)
    proposal_valid = rng.uniform(size=(2, 40)) < 0.9
    levels = [rng.normal(size=(2, 32, 32, channels)).astype(np.float32)]
    w_cls = rng.normal(scale=0.2, size=(pool_size**2 * channels, num_classes + 1)).astype(np.float32)
    w_box = rng.normal(scale=0.2, size=(pool_size**2 * channels, 4 * (num_classes + 1))).astype(np.float32)

    def box_head(pooled):
        x = pooled.reshape(pooled.shape[0], -1)
        return x @ w_cls, (x @ w_box).reshape(x.shape[0], -1, 4)

    cfg = RoIConfig(batch_size_per_image=64, positive_fraction=0.25, fg_iou=0.5, bg_iou=0.5,
                    sampling_ratio=2)
    key = jax.random.key(9)
    ours = roi_heads.losses(box_head, levels, proposals, proposal_valid, gt_boxes, gt_labels, gt_valid,
                            key, cfg, pool_size)

    sample = jax.vmap(partial(roi_heads.sample_rois, **{**TORCHVISION_ROI, "num_samples": 64}))
    rois = sample(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, jax.random.split(key, 2))
    valid = np.asarray(rois.valid).reshape(-1)
    assert 0 < valid.sum() < valid.size and np.asarray(rois.positive).sum() > 0
    cls_logits, box_deltas = map(np.asarray, box_head(roi_heads.pool_rois(levels, rois.rois, pool_size, 2)))
    classification_loss, box_loss = fastrcnn_loss(
        torch.from_numpy(cls_logits[valid]), torch.from_numpy(box_deltas.reshape(len(valid), -1)[valid]),
        [torch.from_numpy(np.asarray(rois.labels).reshape(-1)[valid]).long()],
        [torch.from_numpy(np.asarray(rois.deltas).reshape(-1, 4)[valid])])
    assert set(ours) == {"roi_cls", "roi_box"}
    np.testing.assert_allclose(float(ours["roi_cls"]), classification_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(float(ours["roi_box"]), box_loss.item(), rtol=1e-5)
