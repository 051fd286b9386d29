"""Input pipeline of the detector: COCO file -> static-shape arrays -> augmented batches.

Images are already square (`image_size_px`), so nothing is resized. Ground truth is padded to a
fixed number of boxes with a validity mask, so every batch has the same shapes and the jitted step
compiles once. Augmentation is photometric plus a small affine warp; never a horizontal flip,
which would mirror the digits. With `augment.crop_px` the warp also cuts a random window out of
each training image (the step then sees windows; prediction whole images).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from billetjax import coco as cc
from billetjax.detector.geometry import training_window_px
from billetjax.detector.spec import AugmentConfig
from billetjax.vocabulary import UNKNOWN

log = logging.getLogger(__name__)


@dataclass
class DetectionSet:
    """A COCO file as arrays. `labels` are 1..K (0 = padding), label k is `category_ids[k-1]`."""

    images: np.ndarray  # uint8[N, H, W, 3]
    boxes: np.ndarray  # float32[N, G, 4] x1, y1, x2, y2 in pixels
    labels: np.ndarray  # int32[N, G]
    valid: np.ndarray  # bool[N, G]
    image_ids: np.ndarray  # int64[N]
    category_ids: tuple[int, ...]  # ascending
    source: str = ""
    visibility: np.ndarray | None = None  # str[N], the images' `visibility` (UNKNOWN where not given)
    sources: np.ndarray | None = None  # str[N], the images' `source` (real / synthetic; UNKNOWN where not given)
    batch_plan: dict | None = None  # the file's `info.batch_plan` (billetjax.experiments): how to draw batches

    def __len__(self) -> int:
        return len(self.images)


def load_detection_set(json_path: str | os.PathLike, max_boxes: int,
                       category_ids: tuple[int, ...] | None = None,
                       read_image: Callable[[Path], np.ndarray] = cc.read_image) -> DetectionSet:
    """Read a COCO file and its images into a `DetectionSet` with `max_boxes` padded boxes each.

    `category_ids` fixes the label order (pass the training set's to a test set); by default the
    file's own ids in ascending order. Too many boxes in one image is refused with a message.
    `read_image` decodes one image file (e.g. one that remembers files shared by several sets).
    """
    data = cc.load(json_path, require_extras=False)
    file_ids = tuple(sorted(cc.category_names(data)))
    if category_ids is None:
        category_ids = file_ids
    unknown = set(file_ids) - set(category_ids)
    if unknown:
        raise cc.CocoError(f"{json_path}: categories {sorted(unknown)} are not among the model's "
                           f"{list(category_ids)}; train on a set with the same categories")
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
    by_image = cc.annotations_by_image(data)
    n = len(data["images"])
    size = None
    images = None
    boxes = np.zeros((n, max_boxes, 4), np.float32)
    labels = np.zeros((n, max_boxes), np.int32)
    valid = np.zeros((n, max_boxes), bool)
    image_ids = np.zeros((n,), np.int64)
    visibility = np.array([str(r.get("visibility", UNKNOWN)) for r in data["images"]], dtype=object)
    sources = np.array([str(r.get("source", UNKNOWN)) for r in data["images"]], dtype=object)
    for i, record in enumerate(data["images"]):
        rgb = read_image(cc.image_path(json_path, record))
        if images is None:
            size = rgb.shape
            images = np.zeros((n, *size), np.uint8)
        if rgb.shape != size:
            raise cc.CocoError(f"{json_path}: image {record['id']} ({record['file_name']}) is "
                               f"{rgb.shape[1]}x{rgb.shape[0]}, the others {size[1]}x{size[0]}; "
                               "the detector expects square images of image_size_px")
        images[i] = rgb
        image_ids[i] = record["id"]
        anns = [a for a in by_image[int(record["id"])] if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        if len(anns) > max_boxes:
            raise cc.CocoError(f"{json_path}: image {record['id']} has {len(anns)} annotations, "
                               f"more than detector.max_boxes = {max_boxes}; raise it in config.yaml")
        for j, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            boxes[i, j] = (x, y, x + w, y + h)
            labels[i, j] = label_of[int(a["category_id"])]
            valid[i, j] = True
    if images is None:
        raise cc.CocoError(f"{json_path}: no images")
    return DetectionSet(images, boxes, labels, valid, image_ids, tuple(category_ids), str(json_path),
                        visibility, sources, data.get("info", {}).get("batch_plan"))


def _warp_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Boxes `[G, 4]` through a 2x3 affine matrix: the axis-aligned hull of the warped corners."""
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1),
                        np.stack([x1, y2], -1), np.stack([x2, y2], -1)], 1)  # [G, 4, 2]
    warped = corners @ matrix[:, :2].T + matrix[:, 2]
    return np.concatenate([warped.min(1), warped.max(1)], -1).astype(np.float32)


def crop_origin(rng: np.random.Generator, boxes: np.ndarray, valid: np.ndarray, image_hw: tuple[int, int],
                size: int, around_boxes: float) -> np.ndarray:
    """The top-left corner `(x0, y0)` of a random `size` x `size` training window of an image of
    `image_hw`, given its (warped) boxes `[G, 4]`; whole pixels, so the window adds no
    interpolation of its own.

    With probability `around_boxes` (and when the image has boxes) the window is drawn among the
    positions that hold one randomly chosen box whole, so most windows show characters; otherwise
    anywhere, so the background far from the characters is seen too.
    """
    h, w = image_hw
    lo, hi = np.zeros(2), np.array([w - size, h - size], np.float64)
    anchored = rng.random() < around_boxes
    if anchored and valid.any():
        box = boxes[rng.choice(np.flatnonzero(valid))].astype(np.float64)
        lo = np.clip(box[2:] - size, 0, hi)
        hi = np.clip(box[:2], lo, hi)
    lo = np.ceil(lo)
    return rng.integers(lo, np.maximum(np.floor(hi), lo) + 1).astype(np.float64)


# Gaussian pixel noise is cut from a fixed field of standard normal values instead of drawn anew:
# drawing it was about half of the augmentation's time, cutting a window costs nothing (with the
# photometric jitter in float32, a batch of eight 160 px windows took 7-10 instead of 21-22 ms on
# a 2-core VM). A random offset and a random flip of each axis give (NOISE_FIELD_MARGIN_PX + 1)^2
# x 4 windows, each with the statistics of fresh noise.
NOISE_FIELD_SEED = 20221202
NOISE_FIELD_MARGIN_PX = 256
_noise_fields: dict[tuple[int, int], np.ndarray] = {}


def noise_window(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Standard normal float32 noise of `shape` (h, w, c): a random window, randomly flipped, of
    a field that depends on `shape` alone (made once per process), so batches stay a function of
    (seed, step)."""
    h, w, c = shape
    side = max(h, w) + NOISE_FIELD_MARGIN_PX
    field = _noise_fields.get((side, c))
    if field is None:
        field = np.random.default_rng(NOISE_FIELD_SEED).standard_normal((side, side, c), dtype=np.float32)
        _noise_fields[(side, c)] = field
    y, x = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
    flip_y, flip_x = 1 - 2 * rng.integers(0, 2, 2)
    return field[y:y + h, x:x + w][::flip_y, ::flip_x]


def augment(rng: np.random.Generator, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
            valid: np.ndarray, cfg: AugmentConfig):
    """One training image: photometric jitter and a small rotation/zoom/shear/shift (never a flip);
    with `cfg.crop_px`, a random window of that size (`crop_origin`) instead of the whole image."""
    h, w = image.shape[:2]
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)
    scale = rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    if cfg.shear > 0:
        shear = rng.uniform(-cfg.shear, cfg.shear)
        matrix = matrix @ np.array([[1.0, shear, -shear * h / 2], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    matrix[:, 2] += rng.uniform(-cfg.translate_px, cfg.translate_px, 2)
    warped = _warp_boxes(boxes, matrix)
    # Rotation enlarges the hull of a box by ~|sin| of its size; shrink it back about its centre.
    shrink = 1.0 / (abs(np.cos(np.deg2rad(angle))) + abs(np.sin(np.deg2rad(angle))))
    centre = (warped[:, :2] + warped[:, 2:]) / 2
    half = (warped[:, 2:] - warped[:, :2]) / 2 * shrink
    warped = np.concatenate([centre - half, centre + half], -1)
    window = training_window_px(cfg.crop_px, min(h, w))
    if window < min(h, w):
        # The window is cut out by the same warp: only its pixels are interpolated.
        origin = crop_origin(rng, warped, valid, (h, w), window, cfg.crop_around_boxes)
        matrix[:, 2] -= origin
        warped = warped - np.tile(origin, 2).astype(np.float32)
        h = w = window
    out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    area = np.prod(np.maximum(warped[:, 2:] - warped[:, :2], 0), -1)
    clipped = np.concatenate([np.clip(warped[:, :2], 0, [w, h]), np.clip(warped[:, 2:], 0, [w, h])], -1)
    inside = np.prod(np.maximum(clipped[:, 2:] - clipped[:, :2], 0), -1)
    keep = valid & (inside >= cfg.min_visible * np.maximum(area, 1e-6)) & (inside > 1.0)

    if cfg.blur_sigma > 0 and rng.random() < 0.5:
        # Worn, shallow or out-of-focus stamps (the paper's "poor" class) look blurred.
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, cfg.blur_sigma))
    # Contrast about mid-grey, a gain per channel, brightness: one affine map per channel.
    contrast = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    gain = rng.uniform(1 - cfg.channel_gain, 1 + cfg.channel_gain, 3)
    brightness = 255 * rng.uniform(-cfg.brightness, cfg.brightness)
    x = out * np.float32(contrast) * gain.astype(np.float32)
    x += (127.5 * (1 - contrast) * gain + brightness).astype(np.float32)
    if cfg.noise_std > 0:
        x += np.float32(cfg.noise_std) * noise_window(rng, x.shape)
    image = np.clip(x, 0, 255).astype(np.uint8)
    clipped = np.where(keep[:, None], clipped, 0).astype(np.float32)
    return image, clipped, np.where(keep, labels, 0).astype(np.int32), keep


def repeat_factors(groups: np.ndarray, threshold: float) -> np.ndarray:
    """Repeat-factor sampling (Gupta et al. 2019, LVIS) over image groups: an image of a group
    that makes up a fraction f < `threshold` of the set is shown max(1, sqrt(threshold / f))
    times per epoch. Grouped by visibility, the rare poor and partial billets are seen more
    often without starving the well-visible ones. float64[N]; all ones when `threshold` is 0.
    """
    groups = np.asarray(groups)
    if threshold <= 0 or len(groups) == 0:
        return np.ones(len(groups))
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return np.maximum(1.0, np.sqrt(threshold / (counts / len(groups))))[inverse]


def _epoch_order(n: int, seed: int, epoch: int, repeat: np.ndarray | None, stream: int | None = None) -> np.ndarray:
    """The image indices of one epoch, shuffled; with `repeat`, each image appears floor(r) or
    ceil(r) times (stochastic rounding, so its expected count is r). `stream` keeps the orders of
    several parts of one set (`planned_batches`) independent."""
    rng = np.random.default_rng([seed, epoch] if stream is None else [seed, 1 << 21, stream, epoch])
    if repeat is None:
        return rng.permutation(n)
    whole = np.floor(repeat)
    counts = (whole + (rng.random(n) < repeat - whole)).astype(np.int64)
    return rng.permutation(np.repeat(np.arange(n), counts))


def _assemble(data: DetectionSet, idx: np.ndarray, seed: int, step: int, augment_cfg: AugmentConfig | None):
    """The batch `(images, boxes, labels, valid)` of images `idx` at training step `step`
    (0-based), augmented with the randomness of (seed, step)."""
    images, boxes = data.images[idx], data.boxes[idx]
    labels, valid = data.labels[idx], data.valid[idx]
    if augment_cfg is not None:
        rng = np.random.default_rng([seed, 1 << 20, step])
        out = [augment(rng, images[i], boxes[i], labels[i], valid[i], augment_cfg) for i in range(len(idx))]
        images, boxes, labels, valid = (np.stack(a) for a in zip(*out))
    return images, boxes, labels, valid


def batches(data: DetectionSet, batch_size: int, seed: int, augment_cfg: AugmentConfig | None,
            start_step: int = 0, repeat: np.ndarray | None = None):
    """Endless training batches `(images, boxes, labels, valid)` drawn uniformly from all images;
    reproducible from any step.

    Batch `s` comes from epoch permutations seeded by (seed, epoch) and augmentation seeded by
    (seed, s), so a training resumed at `start_step` sees the same batches as an unbroken one.
    `repeat` (per image, >= 1; see `repeat_factors`) shows images more often; None: once each.
    """
    n = len(data)
    if repeat is not None and np.all(repeat == 1.0):
        repeat = None
    epoch, first = 0, 0  # the epoch and its first step
    while True:
        order = _epoch_order(n, seed, epoch, repeat)
        if len(order) < batch_size:
            order = np.resize(order, batch_size)
        per_epoch = len(order) // batch_size
        for offset in range(max(start_step - first, 0), per_epoch):
            step = first + offset
            yield _assemble(data, order[offset * batch_size:(offset + 1) * batch_size], seed, step, augment_cfg)
        epoch, first = epoch + 1, first + per_epoch


# ------------------------------------------------------------------ batch plans (experiments.sets)


def synthetic_per_batch(plan: dict, steps: int, batch_size: int, n_real: int, n_synthetic: int) -> np.ndarray:
    """How many of each training step's `batch_size` images are synthetic under a batch plan
    (`billetjax.experiments.Experiment.batch_plan`). int[steps].

    - `synthetic_schedule: [a, b]`: the synthetic share goes linearly from a % at the first step
      to b % at the last;
    - `strategy: sequential`: all synthetic for the first round(steps x n_synthetic / n) steps,
      then all real (one learning-rate schedule over both phases).

    Shares become whole counts by carrying the rounding error from step to step, so the counts
    sum to the shares' total (to within one image).
    """
    if plan["synthetic_schedule"] is not None:
        start, end = plan["synthetic_schedule"]
        share = np.linspace(start, end, steps) / 100.0
    elif plan["strategy"] == "sequential":
        switch = int(round(steps * n_synthetic / max(n_real + n_synthetic, 1)))
        share = (np.arange(steps) < switch).astype(np.float64)
    else:
        raise ValueError(f"batch plan {plan}: neither a synthetic_schedule nor strategy sequential")
    total = np.floor(np.cumsum(share * batch_size) + 0.5)
    return np.diff(total, prepend=0.0).astype(np.int64)


class _Stream:
    """Endless shuffled indices of one part of a set (epochs as in `batches`), taken a few at a time."""

    def __init__(self, members: np.ndarray, seed: int, stream: int, repeat: np.ndarray | None):
        self.members, self.seed, self.stream = members, seed, stream
        self.repeat = None if repeat is None or np.all(repeat == 1.0) else repeat
        self.epoch, self.order, self.pos = 0, self._order(0), 0

    def _order(self, epoch: int) -> np.ndarray:
        return self.members[_epoch_order(len(self.members), self.seed, epoch, self.repeat, self.stream)]

    def take(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self.pos == len(self.order):
                self.epoch, self.pos = self.epoch + 1, 0
                self.order = self._order(self.epoch)
            got = self.order[self.pos:self.pos + k]
            out.append(got)
            self.pos += len(got)
            k -= len(got)
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def planned_batches(data: DetectionSet, batch_size: int, seed: int, augment_cfg: AugmentConfig | None,
                    plan: dict, steps: int, start_step: int = 0, repeat: np.ndarray | None = None):
    """Endless training batches whose synthetic/real make-up follows `plan` (`synthetic_per_batch`);
    after `steps`, the last step's make-up. Each part (`data.sources`) is drawn from its own
    shuffled epochs (with `repeat` within the part), so resuming at `start_step` sees the same
    batches as an unbroken run.
    """
    synthetic = data.sources == "synthetic"
    members = {True: np.flatnonzero(synthetic), False: np.flatnonzero(~synthetic)}
    for is_synthetic, name in ((True, "synthetic"), (False, "real")):
        if len(members[is_synthetic]) == 0:
            raise ValueError(f"{data.source}: batch plan {plan} needs {name} images (image `source`), and the set has none")
    counts = synthetic_per_batch(plan, steps, batch_size, len(members[False]), len(members[True]))
    log.info("batch plan %s: synthetic images per batch %d at step 1, %d at the middle, %d at the end "
             "(mean %.2f of %d)", plan, counts[0], counts[len(counts) // 2], counts[-1], counts.mean(), batch_size)
    streams = {part: _Stream(idx, seed, int(part), None if repeat is None else repeat[idx])
               for part, idx in members.items()}
    step = 0
    while True:
        n_synthetic = int(counts[min(step, steps - 1)])
        idx = np.concatenate([streams[True].take(n_synthetic), streams[False].take(batch_size - n_synthetic)])
        if step >= start_step:
            yield _assemble(data, idx, seed, step, augment_cfg)
        step += 1
